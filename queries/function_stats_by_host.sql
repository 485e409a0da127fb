-- Per-function statistics across hosts: one row per host and function (and
-- the file it lives in), over all of that host's runs and phases.
-- For one trace these are the numbers of `flowdar stats --json`: calls
-- (returned), in_flight (still running when capture ended), total_ns and
-- self_ns (in-flight calls count with their time so far), max_ns.
SELECT
    host,
    function,
    object,
    SUM(CASE WHEN in_flight THEN 0 ELSE 1 END) AS calls,
    SUM(CASE WHEN in_flight THEN 1 ELSE 0 END) AS in_flight,
    SUM(duration_ns) AS total_ns,
    SUM(self_ns) AS self_ns,
    MAX(duration_ns) AS max_ns
FROM calls
GROUP BY host, function, object
ORDER BY host, total_ns DESC, function
