//! A certificate authority made at test time, and the server certificates it issues (the
//! payment API simulator's https).

use pos_agent::simulator::api::TlsIdentity;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA: its certificate goes into the bundle the agent trusts (`SSL_CERT_FILE`).
pub struct Ca {
    pub certificate: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).unwrap();
        Ca { certificate, key }
    }

    /// A server certificate for `name`, valid between the two years.
    pub fn issue(&self, name: &str, from_year: i32, to_year: i32) -> TlsIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.not_before = date_time_ymd(from_year, 1, 1);
        params.not_after = date_time_ymd(to_year, 1, 1);
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        TlsIdentity {
            certificate_chain: vec![certificate.der().to_vec()],
            private_key: key.serialize_der(),
        }
    }
}
