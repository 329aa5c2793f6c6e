//! TLS to Postgres with rustls, following libpq's `sslmode` as far as tokio-postgres parses it
//! (`disable`, `prefer`, `require`):
//!
//! | sslmode | what the sender does |
//! | --- | --- |
//! | `disable` | plain TCP |
//! | `prefer` (the default) | TLS when the server offers it, plain TCP when it does not. The certificate is not checked (libpq's `prefer` does not check it either) unless `--pg-ca-file` is given; then it is checked as under `require` |
//! | `require` | TLS or no connection. The certificate chain *and the host name* are verified (libpq's `verify-full`), against `--pg-ca-file` or else the system's roots |
//!
//! The name checked is the connection string's `host` (an IP address is matched against the
//! certificate's IP SANs); `hostaddr`, when set, is only where the sender connects.
//! The system's roots are those `rustls-native-certs` finds (honouring `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`); a machine without any gets Mozilla's bundle (`webpki-roots`) instead.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// ALPN protocol name Postgres 17+ expects (it requires it with `sslnegotiation=direct`).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Where the certificates that sign the server's come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// `sslmode=disable`: TLS is never used.
    NotUsed,
    /// `sslmode=prefer` without `--pg-ca-file`: encrypted, the server not authenticated.
    Unverified,
    /// The certificates of `--pg-ca-file`.
    CaFile(usize),
    /// The system's trust store.
    System(usize),
    /// Mozilla's bundle, the system having none.
    Mozilla(usize),
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::NotUsed => f.write_str("off (sslmode=disable)"),
            Trust::Unverified => f.write_str(
                "when the server offers it, certificate not checked (sslmode=prefer without --pg-ca-file)",
            ),
            Trust::CaFile(n) => write!(
                f,
                "certificate and host name verified against --pg-ca-file ({})",
                certificates(*n)
            ),
            Trust::System(n) => write!(
                f,
                "certificate and host name verified against the system's roots ({})",
                certificates(*n)
            ),
            Trust::Mozilla(n) => write!(
                f,
                "certificate and host name verified against Mozilla's roots ({}; the system has none)",
                certificates(*n)
            ),
        }
    }
}

fn certificates(n: usize) -> String {
    if n == 1 {
        "1 certificate".to_owned()
    } else {
        format!("{n} certificates")
    }
}

/// The TLS side of every Postgres connection the sender opens (claim/complete and LISTEN).
#[derive(Clone)]
pub struct PgTls {
    connector: MakeRustlsConnect,
    trust: Trust,
}

impl PgTls {
    /// The connector for `mode`, trusting the certificates of `ca_file` when given, else the
    /// system's roots. Fails on an unreadable or empty CA file.
    pub fn new(mode: SslMode, ca_file: Option<&Path>) -> Result<PgTls, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let (builder, trust) = match (mode, ca_file) {
            (SslMode::Disable, _) => (
                builder.with_root_certificates(RootCertStore::empty()),
                Trust::NotUsed,
            ),
            (_, Some(path)) => {
                let roots = load_ca_file(path)?;
                let n = roots.len();
                (builder.with_root_certificates(roots), Trust::CaFile(n))
            }
            (SslMode::Prefer, None) => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider))),
                Trust::Unverified,
            ),
            // `require`, and whatever stricter mode tokio-postgres may learn later.
            (_, None) => {
                let (roots, trust) = system_roots();
                (builder.with_root_certificates(roots), trust)
            }
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(PgTls {
            connector: MakeRustlsConnect::new(config),
            trust,
        })
    }

    /// What `connect` takes.
    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// Where trust comes from, for the startup log.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }
}

/// The certificates of a PEM file, as roots. Fails when the file cannot be read, holds no
/// certificate, or holds one rustls cannot use as a trust anchor.
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("--pg-ca-file {shown}: cannot read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("--pg-ca-file {shown}: bad PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--pg-ca-file {shown}: certificate {}: {e}", i + 1))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "--pg-ca-file {shown}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        ));
    }
    Ok(roots)
}

/// The system's roots, or Mozilla's bundle when the system has none.
fn system_roots() -> (RootCertStore, Trust) {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added > 0 {
        return (roots, Trust::System(added));
    }
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let n = roots.len();
    (roots, Trust::Mozilla(n))
}

/// `sslmode=prefer` without a CA file, as libpq: the session is encrypted and its handshake
/// signatures checked, but any certificate is accepted, so the server is not authenticated.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("beema-sender-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// A self-signed CA certificate (P-256), only ever loaded as a trust anchor.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATegAwIBAgIUS1DuAfTrHff06oGiGtw4ZS7JUzUwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSYmVlbWEgdW5pdCB0ZXN0IENBMCAXDTI2MTEyNDAyMDQzNloY
DzIxMjYxMDMxMDIwNDM2WjAdMRswGQYDVQQDDBJiZWVtYSB1bml0IHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASJ1xVpqYc/lTVfmvxFiWR008weH0xt
HPmAsKGxrjoM2fjTHD6DdkRAScIrJjATT6HKJr1yLf20I/CgcAq1CuF4o1MwUTAd
BgNVHQ4EFgQUWUGzJr4pUf36axsEUxQvKwhA3LEwHwYDVR0jBBgwFoAUWUGzJr4p
Uf36axsEUxQvKwhA3LEwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEA4qyLWOUWU6FLg+CmsNi0PjSOrbG91tZsNuI1sFDwIxwCIQCI2ML0Shry+Ras
N4Y8YuClufqL+Mcl3RPZUOWc2KVVMw==
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_file_is_the_only_trust_when_given() {
        let two = format!("# a bundle\n{CA_PEM}\n{CA_PEM}");
        let path = temp_file("bundle.pem", two.as_bytes());
        for mode in [SslMode::Prefer, SslMode::Require] {
            match PgTls::new(mode, Some(&path)) {
                Ok(t) => assert_eq!(t.trust(), &Trust::CaFile(2)),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn modes_pick_their_trust() {
        let t = |mode| match PgTls::new(mode, None) {
            Ok(t) => t.trust().clone(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(t(SslMode::Disable), Trust::NotUsed);
        assert_eq!(t(SslMode::Prefer), Trust::Unverified);
        assert!(
            matches!(t(SslMode::Require), Trust::System(n) | Trust::Mozilla(n) if n > 0),
            "require verifies against some roots"
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let missing = std::path::Path::new("/nonexistent/beema-ca.pem");
        let e = load_ca_file(missing).err().unwrap_or_default();
        assert!(
            e.contains("--pg-ca-file /nonexistent/beema-ca.pem: cannot read"),
            "{e}"
        );

        let empty = temp_file("empty.pem", b"no certificate here\n");
        let e = load_ca_file(&empty).err().unwrap_or_default();
        assert!(e.contains("no PEM certificate"), "{e}");

        let junk = temp_file(
            "junk.pem",
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        let e = load_ca_file(&junk).err().unwrap_or_default();
        assert!(e.contains("certificate 1"), "{e}");

        // The CA file is loaded whatever the mode (except disable, which never uses it).
        assert!(PgTls::new(SslMode::Require, Some(&empty)).is_err());
        assert!(PgTls::new(SslMode::Prefer, Some(&empty)).is_err());
        assert!(PgTls::new(SslMode::Disable, Some(&empty)).is_ok());
    }
}
