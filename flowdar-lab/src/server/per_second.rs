//! A client's answers and failures second by second: what shows a denial
//! starting and service coming back, where a phase's mean hides both.

/// Counts per wall second of a client's load; index 0 is its first second.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PerSecond {
    /// When the load's first second began, wall clock (ns since the
    /// epoch): what lines it up with a trace's capture.
    pub start_unix_ns: u64,
    /// Requests answered (status 2xx within the timeout), by the second
    /// the answer came.
    pub ok: Vec<u64>,
    /// Connects and requests that failed, by the second they failed.
    pub failed: Vec<u64>,
}

impl PerSecond {
    /// Empty counts for a load of `seconds` wall seconds (at least one)
    /// that begins now.
    pub fn new(seconds: usize) -> Self {
        let n = seconds.max(1);
        Self {
            start_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            ok: vec![0; n],
            failed: vec![0; n],
        }
    }

    /// Counts one outcome at `elapsed_s` into the load. An outcome after the
    /// load's last second (a request answered within its timeout after
    /// the deadline) counts in the last second.
    pub fn add(&mut self, elapsed_s: f64, ok: bool) {
        let v = if ok { &mut self.ok } else { &mut self.failed };
        if v.is_empty() {
            return;
        }
        let i = (elapsed_s.max(0.0) as usize).min(v.len() - 1);
        v[i] += 1;
    }

    pub fn merge(&mut self, other: &PerSecond) {
        for (a, b) in [(&mut self.ok, &other.ok), (&mut self.failed, &other.failed)] {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }

    /// Mean answers a second over the last `seconds` seconds of the load;
    /// `None` without that many seconds.
    pub fn last_rps(&self, seconds: usize) -> Option<f64> {
        let n = self.ok.len();
        (seconds > 0 && n >= seconds)
            .then(|| self.ok[n - seconds..].iter().sum::<u64>() as f64 / seconds as f64)
    }

    /// The first second from which every second served at least `level`
    /// answers: when service came back for good. `None` when the last
    /// second fell short.
    pub fn back_from(&self, level: f64) -> Option<usize> {
        let short = self.ok.iter().rposition(|&n| (n as f64) < level);
        match short {
            None => Some(0),
            Some(i) if i + 1 < self.ok.len() => Some(i + 1),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PerSecond;

    #[test]
    fn outcomes_land_in_their_second_and_late_ones_in_the_last() {
        let mut p = PerSecond::new(3);
        p.add(0.2, true);
        p.add(1.9, true);
        p.add(1.1, false);
        p.add(7.0, true);
        assert_eq!(p.ok, [1, 1, 1]);
        assert_eq!(p.failed, [0, 1, 0]);
        let mut q = PerSecond::new(4);
        q.add(3.5, true);
        q.merge(&p);
        assert_eq!(q.ok, [1, 1, 1, 1]);
    }

    #[test]
    fn service_back_from_the_first_second_after_the_last_short_one() {
        let p = PerSecond {
            ok: vec![100, 0, 0, 30, 90, 95, 100],
            failed: vec![0; 7],
            start_unix_ns: 0,
        };
        assert_eq!(p.back_from(50.0), Some(4));
        assert_eq!(p.back_from(10.0), Some(3));
        assert_eq!(p.back_from(0.0), Some(0));
        assert_eq!(p.back_from(99.0), Some(6));
        assert_eq!(p.back_from(101.0), None);
        assert_eq!(p.last_rps(2), Some(97.5));
        assert_eq!(p.last_rps(8), None);
    }
}
