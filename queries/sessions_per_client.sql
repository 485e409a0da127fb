-- Sessions per client: for each host, run, phase and client IP address,
-- how many sessions (connections, as `flowdar sessions` demultiplexes them)
-- there were, the calls and server time (self time of the calls) they
-- took, and the busiest one. A session is (trace_id, session): session ids
-- are numbered per trace. `client` is null for connections whose client
-- was never read (idle since before capture).
SELECT
    host,
    run,
    phase,
    client,
    COUNT(*) AS sessions,
    SUM(calls) AS calls,
    SUM(server_ns) AS server_ns,
    MAX(calls) AS max_calls_per_session
FROM (
    SELECT host, run, phase, client, trace_id, session,
           COUNT(*) AS calls,
           SUM(self_ns) AS server_ns
    FROM calls
    WHERE session IS NOT NULL
    GROUP BY host, run, phase, client, trace_id, session
) per_session
GROUP BY host, run, phase, client
ORDER BY host, run, phase, client
