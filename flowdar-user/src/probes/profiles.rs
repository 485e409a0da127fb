//! Built-in profiles: probe files shipped in the binary, selected with
//! `--profile NAME:SET[,SET...]` (e.g. `apache:request,io`).
use std::path::Path;

use super::{ConfigError, ProbeFile, ProbeRequest};

/// A built-in profile.
pub struct Profile {
    pub name: &'static str,
    pub description: &'static str,
    pub text: &'static str,
}

pub const PROFILES: &[Profile] = &[Profile {
    name: "apache",
    description: "Apache httpd 2.4 + APR 1.7",
    text: include_str!("../../profiles/apache.toml"),
}];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("`{0}` is not NAME:SET[,SET...] (e.g. apache:request or apache:request,io)")]
    Syntax(String),
    #[error("no built-in profile `{name}` (profiles: {})", PROFILES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))]
    Unknown { name: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Profile {
    pub fn file(&self) -> ProbeFile {
        ProbeFile::parse(Path::new(&format!("<profile {}>", self.name)), self.text)
            .expect("built-in profiles parse")
    }
}

/// The requests of a `NAME:SET[,SET...]` profile selection.
pub fn profile_requests(spec: &str) -> Result<Vec<ProbeRequest>, ProfileError> {
    let (name, sets) = spec
        .split_once(':')
        .ok_or_else(|| ProfileError::Syntax(spec.into()))?;
    let sets: Vec<String> = sets
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if name.is_empty() || sets.is_empty() {
        return Err(ProfileError::Syntax(spec.into()));
    }
    let profile = PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ProfileError::Unknown { name: name.into() })?;
    Ok(profile.file().requests(&sets)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_has_its_sets() {
        let apache = PROFILES[0].file();
        assert_eq!(
            apache.sets(),
            [
                "connection",
                "request",
                "tls",
                "handshake",
                "h2",
                "backend",
                "io",
                "lean",
                "handoff",
                "full"
            ]
        );
    }

    /// A function listed in two sets is one probe, with the capture of the
    /// first set selected: the built-in sets must agree on it, or what a
    /// trace holds would depend on the order of `--profile`'s sets.
    #[test]
    fn a_function_in_two_sets_is_captured_alike_in_both() {
        let all = [
            "connection",
            "request",
            "tls",
            "handshake",
            "h2",
            "backend",
            "io",
            "handoff",
        ];
        let mut seen: std::collections::HashMap<String, (String, crate::probes::Capture)> =
            Default::default();
        for set in all {
            for r in profile_requests(&format!("apache:{set}")).unwrap() {
                if r.function.contains('*') {
                    continue;
                }
                let c = r.capture_for(&r.function);
                if let Some((first, before)) = seen.get(&r.function) {
                    assert_eq!(before, &c, "{} in {first} and {set}", r.function);
                } else {
                    seen.insert(r.function.clone(), (set.to_string(), c));
                }
            }
        }
        assert!(seen.contains_key("ap_run_process_connection"));
    }

    #[test]
    fn apache_targets_carry_their_identifying_functions() {
        for r in profile_requests("apache:request,io").unwrap() {
            let want = match r.target.as_str() {
                "apache2" => "ap_read_request",
                "libapr-1" => "apr_socket_recv",
                other => panic!("unexpected target {other}"),
            };
            assert_eq!(r.identifying_function(), Some(want), "{r}");
        }
        let plain: ProbeRequest = "apache2:ap_read_request".parse().unwrap();
        assert_eq!(plain.identifying_function(), None, "--probe: by name only");
    }

    #[test]
    fn selections_combine_sets() {
        let r = profile_requests("apache:request,io").unwrap();
        assert!(r.iter().any(|r| r.function == "ap_read_request"));
        assert!(r.iter().any(|r| r.function == "apr_socket_recv"));
        let pop = profile_requests("apache:handoff").unwrap();
        let pop = pop
            .iter()
            .find(|r| r.function == "ap_queue_pop_something")
            .unwrap();
        assert_eq!(pop.capture_for("ap_queue_pop_something").deref.len(), 2);
        assert!(matches!(
            profile_requests("nginx:request"),
            Err(ProfileError::Unknown { .. })
        ));
        assert!(matches!(
            profile_requests("apache"),
            Err(ProfileError::Syntax(_))
        ));
        let err = profile_requests("apache:requests").unwrap_err().to_string();
        assert!(err.contains("no probe set named `requests`"), "{err}");
    }

    /// Security: the built-in profiles never read request or response
    /// contents. Every memory read is one 4- or 8-byte scalar (a length, a
    /// count, a pointer); the I/O functions' buffer arguments are never
    /// dereferenced.
    #[test]
    fn builtin_profiles_never_read_payloads() {
        let all = [
            "connection",
            "request",
            "tls",
            "handshake",
            "h2",
            "backend",
            "io",
            "handoff",
            "full",
        ]
        .map(String::from);
        // (function, argument that holds the data buffer)
        let buffers = [
            ("apr_socket_recv", 1u8),
            ("apr_socket_send", 1),
            ("apr_socket_sendv", 1),
            ("apr_socket_sendfile", 1),
            ("SSL_read", 1),
            ("SSL_write", 1),
        ];
        for r in PROFILES[0].file().requests(&all).unwrap() {
            for f in [
                "apr_socket_recv",
                "apr_socket_send",
                "apr_socket_sendv",
                "apr_socket_sendfile",
                "SSL_read",
                "SSL_write",
                &r.function,
            ] {
                let c = r.capture_for(f);
                for d in &c.deref {
                    assert!(matches!(d.bytes, 4 | 8), "{f}: {d:?}");
                    assert!(
                        !buffers.iter().any(|(bf, arg)| *bf == f && *arg == d.arg),
                        "{f} dereferences its data buffer"
                    );
                }
                if let Some(read) = c.read {
                    assert!(
                        !buffers.iter().any(|(bf, arg)| *bf == f && *arg == read.arg),
                        "{f} reads its data buffer"
                    );
                }
            }
        }
    }
}
