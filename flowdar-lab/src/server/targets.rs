//! Which addresses experiments may send traffic to: loopback and the hosts
//! of the experiment's own lab, plus the networks the user names with
//! `--allow-target CIDR` (their own lab). Anything else is refused with one
//! line before a packet is sent.
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("refusing to send traffic to {0}: experiments target loopback or their own lab hosts (198.18.0.0/15) only; pass --allow-target CIDR for a lab network you own")]
    NotAllowed(IpAddr),
}

/// The allowed targets beyond loopback.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// `--allow-target` networks.
    pub allowed: Vec<IpNet>,
    /// The lab's own addresses.
    pub lab: Vec<IpAddr>,
}

impl Targets {
    pub fn check(&self, ip: IpAddr) -> Result<(), TargetError> {
        if ip.is_loopback()
            || self.lab.contains(&ip)
            || self.allowed.iter().any(|n| n.contains(&ip))
        {
            Ok(())
        } else {
            Err(TargetError::NotAllowed(ip))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_lab_and_allowed_networks_only() {
        let t = Targets {
            allowed: vec!["10.1.0.0/16".parse().unwrap()],
            lab: vec!["198.18.0.1".parse().unwrap()],
        };
        for ok in ["127.0.0.1", "127.3.2.1", "::1", "198.18.0.1", "10.1.200.3"] {
            assert_eq!(t.check(ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for no in ["198.18.0.2", "10.2.0.1", "8.8.8.8"] {
            let e = t.check(no.parse().unwrap()).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("refusing to send traffic to {no}:")),
                "{e}"
            );
        }
    }
}
