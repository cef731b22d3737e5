//! A reload (`SIGHUP`, `systemctl reload`): what takes effect at run time, and the
//! configuration the daemon goes on with (docs/configuration.md (Reloading)).
//!
//! The API keys and the provider's service parameters (the secrets, which rotate) are applied;
//! every other key keeps its running value until a restart, and the reload names each key whose
//! new value waits for it. Keys are compared through the `check-config` rendering, so a key is
//! named the way an operator writes it and no secret value is ever compared in the open.

use std::collections::BTreeMap;

use super::*;

/// The configuration a reload goes on with, and the keys whose new value needs a restart.
pub(crate) struct Reloaded {
    pub config: Config,
    pub needs_restart: Vec<String>,
}

/// `running` with the secrets of `loaded` (the four API keys, the service parameters); the keys
/// whose value differs otherwise are listed, their running value kept.
pub(crate) fn reloaded(running: &Config, loaded: Config) -> Reloaded {
    let (before, after) = (
        keyed(&render_effective(running)),
        keyed(&render_effective(&loaded)),
    );
    let reloadable = |key: &str| {
        key == SERVICE_PARAMETERS_KEY
            || key
                .strip_prefix("paywall.")
                .is_some_and(|name| SECRET_KEYS.contains(&name))
    };
    // Both maps are sorted by key: the keys of `before`, then those only in `after`.
    let needs_restart: Vec<String> = before
        .keys()
        .chain(after.keys().filter(|key| !before.contains_key(*key)))
        .filter(|key| !reloadable(key) && before.get(*key) != after.get(*key))
        .cloned()
        .collect();

    let mut config = running.clone();
    for key in SecretKey::ALL {
        *config.file.paywall.secret_mut(key) = loaded.paywall.secret(key).cloned();
    }
    config.paywall_settings.private = loaded.paywall_settings.private.clone();
    config.paywall_settings.public = loaded.paywall_settings.public.clone();
    config.paywall_settings.secrets = loaded.paywall_settings.secrets.clone();
    config.provenance.secrets = loaded.provenance.secrets.clone();
    if let (Some(establish), Some(new)) = (
        config.file.connection.establish.as_mut(),
        loaded.connection.establish.as_ref(),
    ) {
        establish.service_parameters = new.service_parameters.clone();
        config.provenance.service_parameters = loaded.provenance.service_parameters.clone();
    }
    Reloaded {
        config,
        needs_restart,
    }
}

const SERVICE_PARAMETERS_KEY: &str = "connection.establish.service_parameters";

/// The rendered configuration as dotted key → value text (`# key is not set` as an empty
/// value; where a secret came from is not part of its value).
fn keyed(rendered: &str) -> BTreeMap<String, String> {
    let mut section = "";
    let mut keys = BTreeMap::new();
    for line in rendered.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some(key) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            keys.insert(format!("{section}.{key}"), String::new());
        } else if let Some((key, value)) = line.split_once(" = ") {
            let value = value.split("  # from ").next().unwrap_or(value);
            keys.insert(format!("{section}.{key}"), value.to_owned());
        }
    }
    keys
}
