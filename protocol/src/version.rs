//! The protocol's version, negotiated in the WebSocket handshake: a client
//! offers the subprotocol of each version it speaks (beside its token, if the
//! token travels there), and the server selects the one it speaks. A client
//! that offers only versions the server does not speak is refused before
//! anything else is checked, with [`UNSUPPORTED_VERSION_STATUS`].

/// Version 1, this crate's: what clients offer and the server selects.
pub const SUBPROTOCOL: &str = "airwave.v1";

/// What clients offered before versions had names; the server takes it as
/// version 1.
pub const LEGACY_SUBPROTOCOL: &str = "airwave";

/// The HTTP status of a handshake refused for its version (426 Upgrade
/// Required). A browser cannot read a refused handshake's status: it reports
/// close code 1006, as for every refused handshake.
pub const UNSUPPORTED_VERSION_STATUS: u16 = 426;

/// The refusal's reason, in the server's logs and metrics and in the body.
pub const UNSUPPORTED_VERSION_REASON: &str = "unsupported_protocol";

/// What a server makes of the subprotocols a client offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// Answer with this subprotocol.
    Selected(&'static str),
    /// No Airwave version among them (a client that offers no subprotocol,
    /// or only a token): answered without one, as version 1.
    NotOffered,
    /// Only versions this server does not speak: refuse the handshake.
    Unsupported,
}

/// Picks the version to answer `offered` with. A token offered as a
/// subprotocol (three dot-separated parts) is not a version.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Negotiated {
    let mut legacy = false;
    let mut other_version = false;
    for protocol in offered.into_iter().map(str::trim) {
        if protocol == SUBPROTOCOL {
            return Negotiated::Selected(SUBPROTOCOL);
        }
        if protocol == LEGACY_SUBPROTOCOL {
            legacy = true;
        } else if protocol.starts_with("airwave.") && protocol.split('.').count() < 3 {
            other_version = true;
        }
    }
    if legacy {
        Negotiated::Selected(LEGACY_SUBPROTOCOL)
    } else if other_version {
        Negotiated::Unsupported
    } else {
        Negotiated::NotOffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_is_selected_by_its_name_or_the_name_from_before_versions() {
        assert_eq!(negotiate(["airwave.v1", "e.y.j"]), Negotiated::Selected("airwave.v1"));
        assert_eq!(negotiate(["e.y.j", "airwave.v1"]), Negotiated::Selected("airwave.v1"));
        assert_eq!(negotiate(["airwave", "e.y.j"]), Negotiated::Selected("airwave"));
        // Both offered: the named version.
        assert_eq!(negotiate(["airwave", "airwave.v1"]), Negotiated::Selected("airwave.v1"));
        assert_eq!(
            negotiate(["airwave.v2", "airwave.v1"]),
            Negotiated::Selected("airwave.v1")
        );
    }

    #[test]
    fn only_other_versions_are_refused() {
        assert_eq!(negotiate(["airwave.v2"]), Negotiated::Unsupported);
        assert_eq!(negotiate(["airwave.v2", "e.y.j"]), Negotiated::Unsupported);
        assert_eq!(negotiate([" airwave.v0 "]), Negotiated::Unsupported);
    }

    #[test]
    fn no_version_offered_is_version_1_without_an_answer() {
        assert_eq!(negotiate([]), Negotiated::NotOffered);
        assert_eq!(negotiate(["eyJh.eyJz.c2ln"]), Negotiated::NotOffered);
        assert_eq!(negotiate(["graphql-ws"]), Negotiated::NotOffered);
        // A token whose first part happens to start like a version is still a token.
        assert_eq!(negotiate(["airwave.x.y"]), Negotiated::NotOffered);
    }
}
