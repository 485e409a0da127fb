-- Sessions per client: for each host, run and phase, how many sessions
-- (connections, as `flowdar sessions` demultiplexes them) there were, the
-- calls and server time (self time of the calls) they took, and the
-- busiest one. A session is (trace_id, session): session ids are numbered
-- per trace.
-- The client address of a connection is not a column of schema version 1:
-- today a "client" is a session. When the calls table gains a `client`
-- column (issue #16), add `client` to both GROUP BY lists (and the SELECTs).
SELECT
    host,
    run,
    phase,
    COUNT(*) AS sessions,
    SUM(calls) AS calls,
    SUM(server_ns) AS server_ns,
    MAX(calls) AS max_calls_per_session
FROM (
    SELECT host, run, phase, trace_id, session,
           COUNT(*) AS calls,
           SUM(self_ns) AS server_ns
    FROM calls
    WHERE session IS NOT NULL
    GROUP BY host, run, phase, trace_id, session
) per_session
GROUP BY host, run, phase
ORDER BY host, run, phase
