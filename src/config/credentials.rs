//! Systemd credentials: the service's `$CREDENTIALS_DIRECTORY`, or the stores systemd reads
//! them from for the unit (check-config run as root on the terminal).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::*;

/// The credential holding the provider's service parameters for `[connection.establish]`: a
/// TOML table of strings (`Password = "..."`), each name winning over the same name in the file.
pub const SERVICE_PARAMETERS_CREDENTIAL: &str = "service_parameters";
/// Where systemd looks up a credential the unit names without a path
/// (`LoadCredential=ID:pos-agent.ID`), in this order; the encrypted ones
/// (`LoadCredentialEncrypted=`) are the same directories with `.encrypted` appended.
const CREDENTIAL_STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];
/// The file name prefix the shipped unit gives its credentials in the stores.
pub const CREDENTIAL_STORE_PREFIX: &str = "pos-agent.";
/// Replaces [`CREDENTIAL_STORES`] for `check-config` (colon-separated directories): for tests
/// and terminals whose drop-in points elsewhere.
const CREDENTIAL_STORES_ENV: &str = "POS_AGENT_CREDENTIAL_STORES";

/// Where the credentials come from: the service's `$CREDENTIALS_DIRECTORY`, or (for
/// `check-config` run as root on the terminal) the stores systemd reads them from.
pub(super) enum Credentials {
    Directory(PathBuf),
    Stores(Vec<PathBuf>),
}

impl Credentials {
    pub(super) fn of_service(env: &EnvSnapshot) -> Option<Self> {
        env.get("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .map(|d| Credentials::Directory(PathBuf::from(d)))
    }

    pub(super) fn stores(env: &EnvSnapshot) -> Self {
        let stores = match env.get(CREDENTIAL_STORES_ENV).filter(|s| !s.is_empty()) {
            Some(list) => list
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => CREDENTIAL_STORES.iter().map(PathBuf::from).collect(),
        };
        Credentials::Stores(stores)
    }

    /// The credential `id` and the file it came from; `Ok(None)` when there is none. Errors
    /// name the file, never the value.
    #[allow(clippy::type_complexity)]
    pub(super) fn read(
        &self,
        id: &str,
    ) -> Result<Option<(SecretString, PathBuf)>, (String, PathBuf)> {
        match self {
            Credentials::Directory(directory) => {
                let file = directory.join(id);
                match read_credential(&file) {
                    Ok(found) => Ok(found.map(|secret| (secret, file))),
                    Err(message) => Err((message, file)),
                }
            }
            // As systemd does for `LoadCredential=ID:pos-agent.ID`: the first store holding the
            // file; then, as for `LoadCredentialEncrypted=`, the encrypted stores.
            Credentials::Stores(stores) => {
                let name = format!("{CREDENTIAL_STORE_PREFIX}{id}");
                for store in stores {
                    let file = store.join(&name);
                    match read_credential(&file) {
                        Ok(None) => {}
                        Ok(Some(secret)) => return Ok(Some((secret, file))),
                        Err(message) => return Err((message, file)),
                    }
                }
                for store in stores {
                    let mut encrypted = store.clone().into_os_string();
                    encrypted.push(".encrypted");
                    let file = PathBuf::from(encrypted).join(&name);
                    if file.exists() {
                        return match decrypt_credential(id, &file) {
                            Ok(secret) => Ok(Some((secret, file))),
                            Err(message) => Err((message, file)),
                        };
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Decrypts an encrypted credential as systemd would for the unit (`systemd-creds decrypt`,
/// which checks the credential's name and needs the TPM or the host key, hence root).
fn decrypt_credential(id: &str, file: &Path) -> Result<SecretString, String> {
    let output = std::process::Command::new("systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={id}"))
        .arg(file)
        .arg("-")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("systemd-creds cannot be run to decrypt it: {e}"))?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "systemd-creds cannot decrypt it: {}",
            why.trim().lines().last().unwrap_or("no reason given")
        ));
    }
    let mut text = String::from_utf8(output.stdout)
        .map_err(|_| "the decrypted credential is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(SecretString::from(text))
}

/// The `service_parameters` credential: a TOML table of string values. Errors never quote a
/// value.
pub(super) fn parse_service_parameters(
    text: &str,
) -> Result<BTreeMap<String, SecretString>, String> {
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|_| "the credential is not a TOML table of `Name = \"value\"` lines".to_owned())?;
    let table: BTreeMap<String, String> = parsed
        .try_deserialize()
        .map_err(|_| "every service parameter in the credential must be a string".to_owned())?;
    Ok(table
        .into_iter()
        .map(|(name, value)| (name, SecretString::from(value)))
        .collect())
}

/// Reads one systemd credential: `Ok(None)` when the file is absent. One trailing newline
/// (as `echo` or an editor leaves it) is not part of the secret.
fn read_credential(file: &Path) -> Result<Option<SecretString>, String> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("the credential file cannot be read: {e}")),
    };
    let mut text =
        String::from_utf8(bytes).map_err(|_| "the credential file is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(SecretString::from(text)))
}
