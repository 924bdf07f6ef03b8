//! A deployment's private certificate authority: who each certificate speaks for, issuing,
//! renewing and revoking (RFC 5280 certificates and CRLs, made by rcgen; ECDSA P-256).
//!
//! A certificate says what it is in URI subject alternative names, so that a peer can check
//! the role and the instance after the chain verified:
//!
//! - `urn:rotor:role:api`: the service's HTTPS API (DNS names and IP addresses as usual);
//! - `urn:rotor:role:unit` + `urn:rotor:instance:UUID` (+ `urn:rotor:unit:UUID` when known): a
//!   crypto unit of that instance, as a TLS server;
//! - `urn:rotor:role:service` + `urn:rotor:instance:UUID`: the service calling the units of that
//!   instance, as a TLS client.
//!
//! A PKI directory holds `ca.pem`, `ca.key` (mode 0600), `crl.pem` and `issued.json` (what was
//! issued and revoked, by serial number).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::TlsError;

const ROLE_API: &str = "urn:rotor:role:api";
const ROLE_UNIT: &str = "urn:rotor:role:unit";
const ROLE_SERVICE: &str = "urn:rotor:role:service";
const INSTANCE_PREFIX: &str = "urn:rotor:instance:";
const UNIT_PREFIX: &str = "urn:rotor:unit:";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const CRL: &str = "crl.pem";
const ISSUED: &str = "issued.json";

/// How long the authority's own certificate is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// The next update a CRL names. `rotor pki revoke` and `rotor pki crl` write a fresh one; peers
/// keep using an older list (refusing every connection would be worse), so it is a date for the
/// operator.
const CRL_VALIDITY_DAYS: i64 = 30;

/// What a certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// The service's HTTPS API.
    Api,
    /// A crypto unit of `instance`, as a server.
    Unit {
        /// The instance the unit belongs to.
        instance: Uuid,
        /// The unit, when the certificate names it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<Uuid>,
    },
    /// The service, as a client of the units of `instance`.
    Service {
        /// The instance whose units it may call.
        instance: Uuid,
    },
}

impl Role {
    fn uris(&self) -> Vec<String> {
        match self {
            Self::Api => vec![ROLE_API.to_owned()],
            Self::Unit { instance, unit } => {
                let mut uris = vec![ROLE_UNIT.to_owned(), format!("{INSTANCE_PREFIX}{instance}")];
                if let Some(unit) = unit {
                    uris.push(format!("{UNIT_PREFIX}{unit}"));
                }
                uris
            }
            Self::Service { instance } => {
                vec![
                    ROLE_SERVICE.to_owned(),
                    format!("{INSTANCE_PREFIX}{instance}"),
                ]
            }
        }
    }

    fn extended_key_usage(&self) -> ExtendedKeyUsagePurpose {
        match self {
            Self::Api | Self::Unit { .. } => ExtendedKeyUsagePurpose::ServerAuth,
            Self::Service { .. } => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }

    /// The role a certificate states, read from its URI names. Only meaningful for a
    /// certificate whose chain was verified.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|_| TlsError::Certificate("not a valid X.509 certificate".into()))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|_| TlsError::Certificate("invalid subject alternative names".into()))?;
        let uris: Vec<&str> = names
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let uuid_after = |prefix: &str| -> Result<Option<Uuid>, TlsError> {
            let mut found = uris.iter().filter_map(|uri| uri.strip_prefix(prefix));
            let first = found.next();
            if found.next().is_some() {
                return Err(TlsError::Certificate(format!(
                    "more than one {prefix} name"
                )));
            }
            first
                .map(|id| {
                    Uuid::parse_str(id)
                        .map_err(|_| TlsError::Certificate(format!("{prefix}{id} is not a UUID")))
                })
                .transpose()
        };
        let instance = uuid_after(INSTANCE_PREFIX)?;
        let unit = uuid_after(UNIT_PREFIX)?;
        let roles: Vec<&str> = uris
            .iter()
            .copied()
            .filter(|uri| uri.starts_with("urn:rotor:role:"))
            .collect();
        match (roles.as_slice(), instance) {
            ([ROLE_API], None) if unit.is_none() => Ok(Self::Api),
            ([ROLE_UNIT], Some(instance)) => Ok(Self::Unit { instance, unit }),
            ([ROLE_SERVICE], Some(instance)) if unit.is_none() => Ok(Self::Service { instance }),
            _ => Err(TlsError::Certificate(
                "the certificate states no single rotor role (api, unit of an instance, or service of an instance)"
                    .into(),
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api => f.write_str("service API"),
            Self::Unit {
                instance,
                unit: Some(unit),
            } => write!(f, "unit {unit} of instance {instance}"),
            Self::Unit {
                instance,
                unit: None,
            } => write!(f, "a unit of instance {instance}"),
            Self::Service { instance } => write!(f, "service of instance {instance}"),
        }
    }
}

/// What to issue: the role, and the names and addresses a server certificate is valid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// What the certificate speaks for.
    #[serde(flatten)]
    pub role: Role,
    /// DNS names (servers only).
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses (servers only).
    #[serde(default)]
    pub ip_addresses: Vec<IpAddr>,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
    /// Its serial number, hex.
    pub serial: String,
}

impl Issued {
    /// Writes `PREFIX.pem` and `PREFIX.key` (mode 0600), durably.
    pub fn write(&self, prefix: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = with_extension(prefix, "pem");
        let key = with_extension(prefix, "key");
        write_file(&key, self.key_pem.as_bytes())?;
        write_file(&cert, self.cert_pem.as_bytes())?;
        Ok((cert, key))
    }
}

fn with_extension(prefix: &Path, extension: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// Every file is written owner-only (0600): private keys must be, and certificates lose nothing.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    rotor_util::fs::write_durable(path, contents)
        .map_err(|err| TlsError::Io(format!("cannot write {}: {err}", path.display())))
}

/// One certificate the authority issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, hex.
    pub serial: String,
    /// What it was issued for.
    pub subject: Subject,
    /// When it stops being valid (Unix seconds).
    pub not_after: i64,
    /// When it was revoked (Unix seconds), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

#[derive(Default, Serialize, Deserialize)]
struct IssuedFile {
    crl_number: u64,
    certificates: Vec<IssuedRecord>,
}

/// A deployment's certificate authority, opened from its directory.
pub struct Authority {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
    issued: IssuedFile,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rcgen_error(err: rcgen::Error) -> TlsError {
    TlsError::Certificate(err.to_string())
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rotor_crypto::fill_random(&mut bytes);
    // A positive INTEGER: the high bit clear.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

impl Authority {
    /// Creates a new authority in `dir` (which must not hold one), named `name`.
    pub fn create(dir: &Path, name: &str) -> Result<Self, TlsError> {
        if dir.join(CA_KEY).exists() {
            return Err(TlsError::Io(format!(
                "{} already holds a certificate authority",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|err| TlsError::Io(format!("cannot create {}: {err}", dir.display())))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("rotor CA {name}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now() - Duration::minutes(5);
        params.not_after = now() + Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let mut authority = Self {
            dir: dir.to_owned(),
            cert_pem: cert.pem(),
            key,
            issued: IssuedFile::default(),
        };
        write_file(
            &dir.join(CA_KEY),
            Zeroizing::new(authority.key.serialize_pem()).as_bytes(),
        )?;
        write_file(&dir.join(CA_CERT), authority.cert_pem.as_bytes())?;
        authority.save_issued()?;
        authority.write_crl()?;
        Ok(authority)
    }

    /// Opens the authority kept in `dir`.
    pub fn open(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|err| {
                TlsError::Io(format!(
                    "cannot read {}: {err} (is {} a directory made by `rotor pki init`?)",
                    dir.join(name).display(),
                    dir.display()
                ))
            })
        };
        let key_pem = Zeroizing::new(read(CA_KEY)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|_| {
            TlsError::Certificate(format!(
                "{} is not a private key",
                dir.join(CA_KEY).display()
            ))
        })?;
        let cert_pem = read(CA_CERT)?;
        let issued = serde_json::from_str(&read(ISSUED)?).map_err(|err| {
            TlsError::Io(format!("{} is corrupt: {err}", dir.join(ISSUED).display()))
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem,
            key,
            issued,
        })
    }

    /// Opens the authority in `dir`, creating it first if there is none.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<Self, TlsError> {
        if dir.join(CA_KEY).exists() {
            Self::open(dir)
        } else {
            Self::create(dir, name)
        }
    }

    /// The authority's certificate file: the CA bundle peers trust.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The revocation list file units and the service check.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL)
    }

    /// Everything issued, oldest first.
    pub fn issued(&self) -> &[IssuedRecord] {
        &self.issued.certificates
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, TlsError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(rcgen_error)
    }

    /// Issues a certificate with a new key pair for `subject`, valid for `days`.
    pub fn issue(&mut self, subject: &Subject, days: u32) -> Result<Issued, TlsError> {
        let is_server = !matches!(subject.role, Role::Service { .. });
        let has_names = !(subject.dns_names.is_empty() && subject.ip_addresses.is_empty());
        if !is_server && has_names {
            return Err(TlsError::Certificate(
                "a service client certificate carries no DNS names or IP addresses".into(),
            ));
        }
        if is_server && !has_names {
            return Err(TlsError::Certificate(
                "a server certificate needs at least one DNS name or IP address".into(),
            ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.role.to_string());
        params.distinguished_name = dn;
        for name in &subject.dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|_| TlsError::Certificate(format!("{name} is not a DNS name")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &subject.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in subject.role.uris() {
            let uri = uri.try_into().map_err(rcgen_error)?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![subject.role.extended_key_usage()];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now() - Duration::minutes(5);
        let not_after = now() + Duration::days(i64::from(days.max(1)));
        params.not_after = not_after;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(rcgen_error)?;
        let serial = hex::encode(serial.to_bytes());
        self.issued.certificates.push(IssuedRecord {
            serial: serial.clone(),
            subject: subject.clone(),
            not_after: not_after.unix_timestamp(),
            revoked_at: None,
        });
        self.save_issued()?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            serial,
        })
    }

    /// The record of the certificate with serial number `serial` (hex), or of the certificate
    /// in the PEM file `cert`.
    pub fn find(&self, serial: &str) -> Option<&IssuedRecord> {
        let serial = serial.trim().to_ascii_lowercase();
        self.issued.certificates.iter().find(|c| c.serial == serial)
    }

    /// Revokes the certificate with serial number `serial` (hex) and writes a new CRL.
    pub fn revoke(&mut self, serial: &str) -> Result<&IssuedRecord, TlsError> {
        let serial = serial.trim().to_ascii_lowercase();
        let index = self
            .issued
            .certificates
            .iter()
            .position(|c| c.serial == serial)
            .ok_or_else(|| {
                TlsError::Certificate(format!("this authority issued no certificate {serial}"))
            })?;
        if self.issued.certificates[index].revoked_at.is_none() {
            self.issued.certificates[index].revoked_at = Some(now().unix_timestamp());
            self.save_issued()?;
        }
        self.write_crl()?;
        Ok(&self.issued.certificates[index])
    }

    /// Writes a fresh CRL (a new number, valid for 30 days) listing every revoked certificate.
    pub fn write_crl(&mut self) -> Result<PathBuf, TlsError> {
        // The CRL number only moves forward, so a peer can tell a newer list from an older one.
        self.issued.crl_number += 1;
        let revoked_certs = self
            .issued
            .certificates
            .iter()
            .filter_map(|record| {
                let at = record.revoked_at?;
                let serial = hex::decode(&record.serial).ok()?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(now()),
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now() - Duration::minutes(5),
            next_update: now() + Duration::days(CRL_VALIDITY_DAYS),
            crl_number: SerialNumber::from(self.issued.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?).map_err(rcgen_error)?;
        let pem = crl.pem().map_err(rcgen_error)?;
        write_file(&self.crl_path(), pem.as_bytes())?;
        self.save_issued()?;
        Ok(self.crl_path())
    }

    fn save_issued(&self) -> Result<(), TlsError> {
        let text = serde_json::to_vec_pretty(&self.issued)
            .map_err(|err| TlsError::Io(format!("cannot encode the issued list: {err}")))?;
        write_file(&self.dir.join(ISSUED), &text)
    }
}

/// The serial number (hex) of the first certificate in a PEM file.
pub fn serial_of_pem_file(path: &Path) -> Result<String, TlsError> {
    let cert = crate::pem::load_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Certificate(format!("{} holds no certificate", path.display())))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| TlsError::Certificate(format!("{} is not a certificate", path.display())))?;
    Ok(hex::encode(parsed.raw_serial()))
}
