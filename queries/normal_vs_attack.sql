-- Normal vs attack per function: for each host and run, the `normal` phase
-- against the `attack` phase, as `flowdar diff --json normal attack` puts
-- them: base_* is normal, test_* is attack; calls are returned calls,
-- in_flight the attack's calls still running at the end; means are
-- total / (calls + in flight), in-flight time counted so far, rounded down.
SELECT
    host,
    run,
    function,
    base_calls,
    test_calls,
    base_in_flight,
    in_flight,
    base_total_ns,
    test_total_ns,
    CASE WHEN base_calls + base_in_flight = 0 THEN 0
         ELSE CAST(FLOOR(base_total_ns / (base_calls + base_in_flight)) AS BIGINT)
    END AS base_mean_ns,
    CASE WHEN test_calls + in_flight = 0 THEN 0
         ELSE CAST(FLOOR(test_total_ns / (test_calls + in_flight)) AS BIGINT)
    END AS test_mean_ns
FROM (
    SELECT
        host,
        run,
        function,
        SUM(CASE WHEN phase = 'normal' AND NOT in_flight THEN 1 ELSE 0 END) AS base_calls,
        SUM(CASE WHEN phase = 'attack' AND NOT in_flight THEN 1 ELSE 0 END) AS test_calls,
        SUM(CASE WHEN phase = 'normal' AND in_flight THEN 1 ELSE 0 END) AS base_in_flight,
        SUM(CASE WHEN phase = 'attack' AND in_flight THEN 1 ELSE 0 END) AS in_flight,
        SUM(CASE WHEN phase = 'normal' THEN duration_ns ELSE 0 END) AS base_total_ns,
        SUM(CASE WHEN phase = 'attack' THEN duration_ns ELSE 0 END) AS test_total_ns
    FROM calls
    WHERE phase IN ('normal', 'attack')
    GROUP BY host, run, function
) per_phase
ORDER BY host, run, test_total_ns - base_total_ns DESC, function
