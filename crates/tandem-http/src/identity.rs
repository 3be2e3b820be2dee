//! Who is at the other end of a connection, as its verified client
//! certificate says (DESIGN.md, Security): a region and its jurisdiction, the
//! router, or an operator. A certificate of the deployment's CA names its
//! holder in URI subject alternative names (`urn:tandem:region:<name>`,
//! `urn:tandem:jurisdiction:<J>`, `urn:tandem:role:router`,
//! `urn:tandem:role:operator`); the chain has been verified by the handshake
//! before anything here reads it, so these names are proven, not claimed.
//! Headers never change an identity.
//!
//! A server's certificate also carries a DNS name a client verifies by the
//! role it expects to reach (`<region>.region.tandem`, `router.tandem`), not
//! by address: every process here is 127.0.0.1, and latency proxies sit in
//! between.

/// The URI naming a region.
pub fn region_uri(region: &str) -> String {
    format!("urn:tandem:region:{region}")
}

/// The URI naming a region's jurisdiction.
pub fn jurisdiction_uri(jurisdiction: &str) -> String {
    format!("urn:tandem:jurisdiction:{jurisdiction}")
}

pub const ROUTER_URI: &str = "urn:tandem:role:router";
pub const OPERATOR_URI: &str = "urn:tandem:role:operator";

/// The DNS name a region's certificate is verified by.
pub fn region_server_name(region: &str) -> String {
    format!("{region}.region.tandem")
}

/// The DNS name the router's certificate is verified by.
pub const ROUTER_SERVER_NAME: &str = "router.tandem";

/// What a connection's client certificate proves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// No client certificate (a data-plane client, or a plaintext connection).
    #[default]
    Anonymous,
    Region {
        name: String,
        jurisdiction: String,
    },
    Router,
    Operator,
    /// A certificate of the deployment's CA that names no tandem role.
    Unrecognized,
}

impl Identity {
    /// The identity the URI SANs of a verified certificate name.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Identity {
        let (mut region, mut jurisdiction, mut router, mut operator) = (None, None, false, false);
        for uri in uris {
            if let Some(r) = uri.strip_prefix("urn:tandem:region:") {
                region = Some(r.to_owned());
            } else if let Some(j) = uri.strip_prefix("urn:tandem:jurisdiction:") {
                jurisdiction = Some(j.to_owned());
            } else if uri == ROUTER_URI {
                router = true;
            } else if uri == OPERATOR_URI {
                operator = true;
            }
        }
        match (region, jurisdiction, router, operator) {
            (Some(name), Some(jurisdiction), false, false) => {
                Identity::Region { name, jurisdiction }
            }
            (None, None, true, false) => Identity::Router,
            (None, None, false, true) => Identity::Operator,
            _ => Identity::Unrecognized,
        }
    }

    /// For logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Identity::Anonymous => "no client certificate".into(),
            Identity::Region { name, jurisdiction } => format!("region {name} ({jurisdiction})"),
            Identity::Router => "the router".into(),
            Identity::Operator => "an operator".into(),
            Identity::Unrecognized => "a certificate that names no tandem role".into(),
        }
    }
}

/// What the connection layer knows of a request's connection, in its
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    pub identity: Identity,
    /// The client certificate's serial number (to match it against revocations).
    pub serial: Option<Vec<u8>>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The identity and serial number of a DER client certificate (already
/// verified by the handshake).
pub fn identity_of_certificate(der: &[u8]) -> (Identity, Option<Vec<u8>>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (Identity::Unrecognized, None);
    };
    let serial = Some(cert.raw_serial().to_vec());
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = name {
                uris.push(*u);
            }
        }
    }
    (Identity::from_uris(uris), serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_exactly_one_role() {
        let eu = [region_uri("eu-west"), jurisdiction_uri("EU")];
        assert_eq!(
            Identity::from_uris(eu.iter().map(String::as_str)),
            Identity::Region { name: "eu-west".into(), jurisdiction: "EU".into() }
        );
        assert_eq!(Identity::from_uris([ROUTER_URI]), Identity::Router);
        assert_eq!(Identity::from_uris([OPERATOR_URI, "https://x"]), Identity::Operator);
        // A region without its jurisdiction, or two roles at once, is nobody.
        assert_eq!(Identity::from_uris([region_uri("eu-west").as_str()]), Identity::Unrecognized);
        assert_eq!(Identity::from_uris([ROUTER_URI, OPERATOR_URI]), Identity::Unrecognized);
        let both = [region_uri("a"), jurisdiction_uri("EU"), ROUTER_URI.to_owned()];
        assert_eq!(Identity::from_uris(both.iter().map(String::as_str)), Identity::Unrecognized);
        assert_eq!(Identity::from_uris([]), Identity::Unrecognized);
        assert_eq!(region_server_name("us-east"), "us-east.region.tandem");
    }
}
