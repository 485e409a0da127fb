//! Short stable names for the pointers a diagram shows (`conn 3`, `req 17`,
//! `sock 2`), so a reader follows objects instead of hex. The kind comes
//! from what the function is known to take or return (Apache's and APR's
//! signatures, or DWARF parameter names when the trace has them); any
//! other address is an `obj`. An address named again by the call that
//! creates such an object (`ap_read_request`'s result, a new connection)
//! gets a new name: pools reuse addresses from one request to the next.
use std::collections::HashMap;

use serde::Serialize;

use crate::sessions::{CONNECTION, READ, REQUEST};

/// One name of the legend: what the diagram shows, and the address it
/// stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    pub name: String,
    pub value: String,
}

/// The lowest value taken for an address when nothing says what it is:
/// counts, lengths and flags stay numbers.
const LOWEST_ADDRESS: u64 = 0x40_0000;
/// Above user space: not an address of the traced process.
const USER_END: u64 = 0x8000_0000_0000;

/// What argument `arg` of `function` (its return value for `None`) is,
/// when known. `params` are the DWARF parameter names, possibly empty.
fn kind(function: &str, params: &[String], arg: Option<usize>) -> Option<&'static str> {
    match arg {
        None => match function {
            "ap_read_request" => Some("req"),
            "ap_run_create_connection" => Some("conn"),
            _ => None,
        },
        Some(i) => {
            let by_param = params.get(i).and_then(|p| match p.as_str() {
                "r" => Some("req"),
                "c" => Some("conn"),
                "sock" | "sd" | "csd" => Some("sock"),
                _ => None,
            });
            by_param.or(match (i, function) {
                // The signatures the session tracker already relies on.
                (0, f) if f == READ || CONNECTION.contains(&f) => Some("conn"),
                (0, f) if REQUEST.contains(&f) => Some("req"),
                (0, f) if f.starts_with("apr_socket_") => Some("sock"),
                (1, "ap_queue_push_socket") => Some("sock"),
                _ => None,
            })
        }
    }
}

/// Names handed out so far, in order of first appearance.
#[derive(Debug, Default)]
pub struct Names {
    current: HashMap<u64, usize>,
    /// Per address, when each of its names was given (ns), in order.
    history: HashMap<u64, Vec<(u64, usize)>>,
    counts: HashMap<&'static str, usize>,
    legend: Vec<Named>,
}

impl Names {
    /// The name of `value` as argument `arg` of `function` (`None`: its
    /// return value) in a call at `at_ns`, or the value as hex when it is
    /// no address. Calls come in time order.
    pub fn arg(
        &mut self,
        function: &str,
        params: &[String],
        arg: Option<usize>,
        value: u64,
        at_ns: u64,
    ) -> String {
        let kind = kind(function, params, arg);
        // A creator's result is a new object even at an old address.
        let created = arg.is_none() && kind.is_some();
        if value == 0 {
            // A null pointer where one is known; a zero status otherwise.
            return if kind.is_some() { "NULL" } else { "0x0" }.into();
        }
        if !created {
            if let Some(&i) = self.current.get(&value) {
                return self.legend[i].name.clone();
            }
        }
        match kind {
            Some(k) => self.fresh(k, value, at_ns),
            None if (LOWEST_ADDRESS..USER_END).contains(&value) => self.fresh("obj", value, at_ns),
            None => format!("{value:#x}"),
        }
    }

    /// The name of an object handed between threads at `at_ns`, once all
    /// calls are named: the name its address had then, else the first it
    /// got after (a socket is handed over before its worker touches it).
    pub fn object(&mut self, value: u64, at_ns: u64) -> String {
        let named = self.history.get(&value).and_then(|h| {
            h.iter()
                .rev()
                .find(|&&(t, _)| t <= at_ns)
                .or_else(|| h.first())
                .map(|&(_, i)| i)
        });
        match named {
            Some(i) => self.legend[i].name.clone(),
            None => self.fresh("obj", value, at_ns),
        }
    }

    fn fresh(&mut self, kind: &'static str, value: u64, at_ns: u64) -> String {
        let n = self.counts.entry(kind).or_default();
        *n += 1;
        let name = format!("{kind} {n}");
        self.current.insert(value, self.legend.len());
        self.history
            .entry(value)
            .or_default()
            .push((at_ns, self.legend.len()));
        self.legend.push(Named {
            name: name.clone(),
            value: format!("{value:#x}"),
        });
        name
    }

    pub fn into_legend(self) -> Vec<Named> {
        self.legend
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn kinds_stable_names_and_reuse() {
        let mut n = Names::default();
        const T: u64 = 100;
        let none: &[String] = &[];
        assert_eq!(
            n.arg("ap_read_request", none, Some(0), 0x7f00_0000_1000, T),
            "conn 1"
        );
        assert_eq!(
            n.arg("ap_read_request", none, None, 0x7f00_0000_2000, T),
            "req 1"
        );
        assert_eq!(
            n.arg("ap_invoke_handler", none, Some(0), 0x7f00_0000_2000, T),
            "req 1"
        );
        // The pool hands the same address to the next request.
        assert_eq!(
            n.arg("ap_read_request", none, None, 0x7f00_0000_2000, T + 10),
            "req 2"
        );
        assert_eq!(
            n.arg("ap_run_handler", none, Some(0), 0x7f00_0000_2000, T + 11),
            "req 2"
        );
        assert_eq!(
            n.arg("ap_lingering_close", none, Some(0), 0x7f00_0000_1000, T),
            "conn 1"
        );
        assert_eq!(
            n.arg("apr_socket_recv", none, Some(0), 0x5500_0000_0000, T),
            "sock 1"
        );
        assert_eq!(
            n.arg("apr_poll", none, Some(1), 0x5500_0000_9000, T),
            "obj 1"
        );
        assert_eq!(n.arg("apr_poll", none, Some(2), 8192, T), "0x2000");
        assert_eq!(n.arg("ap_read_request", none, None, 0, T), "NULL");
        assert_eq!(n.arg("apr_socket_recv", none, None, 0, T), "0x0");
        assert_eq!(n.object(0x5500_0000_0000, 0), "sock 1");
        // A hand-off is named by its time: before the reuse, the first
        // request (and before any name, the first name).
        assert_eq!(n.object(0x7f00_0000_2000, T - 1), "req 1");
        assert_eq!(n.object(0x7f00_0000_2000, T + 5), "req 1");
        assert_eq!(n.object(0x7f00_0000_2000, T + 10), "req 2");
        let params = vec!["r".to_string()];
        assert_eq!(
            n.arg("my_handler", &params, Some(0), 0x7f00_0000_3000, T),
            "req 3"
        );
        let legend = n.into_legend();
        assert_eq!(legend.len(), 6);
        assert_eq!(legend[1].name, "req 1");
        assert_eq!(legend[1].value, "0x7f0000002000");
    }
}
