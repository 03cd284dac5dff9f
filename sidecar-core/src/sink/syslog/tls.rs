//! The TLS client settings of a syslog sink over TLS (RFC 5425): the CA roots (a file, or the
//! system's) and the server name to verify.

use crate::config::FieldError;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{split_host_port, SyslogSpec};

impl SyslogSpec {
    /// The TLS client settings and the name to verify; errors name the field.
    pub(super) fn tls_config(
        &self,
    ) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), FieldError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        FieldError::new("ca_file", format!("cannot read {}: {e}", path.display()))
                    })?;
                if certs.is_empty() {
                    return Err(FieldError::new(
                        "ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        FieldError::new("ca_file", format!("{}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                // Unreadable system certificates are skipped: the handshake then says which
                // server could not be verified.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => split_host_port(&self.address).map_or("", |(host, _)| host),
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            FieldError::new(
                if self.server_name.is_some() {
                    "server_name"
                } else {
                    "address"
                },
                format!("{host:?} cannot be checked against a certificate: {e}"),
            )
        })?;
        // An explicit provider: no process-wide default has to be installed.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FieldError::new("transport", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok((Arc::new(config), name))
    }
}
