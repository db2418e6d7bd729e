//! A throwaway CA and a server certificate it signed, for HTTPS tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA, and a leaf for `localhost`, `127.0.0.1` and `::1` signed by it.
/// `ca.pem` is written into `dir` (`ca_path`); the directory lives as long as this value.
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "webhook-sink test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        leaf_params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf_params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).expect("sign leaf");

        let dir = tempfile::tempdir().expect("create temp dir for certs");
        let ca_path = dir.path().join("ca.pem");
        let ca_pem = ca_cert.pem();
        std::fs::write(&ca_path, &ca_pem).expect("write ca.pem");

        TestCerts { ca_pem, cert_pem: leaf_cert.pem(), key_pem: leaf_key.serialize_pem(), dir, ca_path }
    }
}

/// A CA for client certificates and a client certificate it signed (`clientAuth`), for
/// mTLS tests. With `key_pem`, the client certificate is for that key (e.g. an RSA key
/// made by openssl); otherwise rcgen makes an ECDSA P-256 key (PKCS#8).
pub struct ClientCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientCerts {
    pub fn generate(key_pem: Option<&str>) -> ClientCerts {
        let ca_key = KeyPair::generate().expect("generate client CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "webhook-sink test client CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign client CA");

        let key = match key_pem {
            Some(pem) => KeyPair::from_pem(pem).expect("a key rcgen can sign for"),
            None => KeyPair::generate().expect("generate client key"),
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, "webhook-sink test client");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("sign client certificate");
        ClientCerts { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// The `openssl` binary (Debian package `openssl`), or `None` (said loudly; a failure
/// under CI) when it is not installed.
pub fn openssl() -> Option<PathBuf> {
    super::peer::require("openssl", "openssl", &[])
}

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
pub fn run_openssl(openssl: &std::path::Path, dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A self-signed server certificate made the usual way, exactly as in the issue
/// (`openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=IP -addext subjectAltName=IP:IP`),
/// written to `dir/NAME.crt` and `dir/NAME.key`; returns the two paths. openssl marks such
/// a certificate as a CA (`basicConstraints = CA:TRUE`, from its default config).
pub fn openssl_self_signed(
    openssl: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    ip: &str,
) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subj = format!("/CN={ip}");
    let san = format!("subjectAltName=IP:{ip}");
    let args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-addext", &san];
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-days", "30", "-keyout", &key, "-out", &crt]);
    run_openssl(openssl, dir, &all);
    (dir.join(crt), dir.join(key))
}
