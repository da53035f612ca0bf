//! Unit tests of `config::reader`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, ConfigError};

fn with_gradient(extra: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "[gradient]\nbase_url = \"http://127.0.0.1:9\"\n{extra}\n[[service]]\nmodule = \"edr\"\nname = \"EDR\"\nunit = \"devices\"\ncategory = \"security\"\nsubcategory = \"endpoint detection and response (EDR)\"\n"
    );
    Config::from_toml(&text, Path::new("/etc/x/c.toml"), BTreeMap::new())
}

#[test]
fn vendor_profile_urls_are_optional_https_urls() {
    let c = with_gradient("").unwrap();
    assert_eq!(c.gradient.integration_portal_url, None);
    assert_eq!(c.gradient.support_page_url, None);
    // Empty is "not managed", like unset.
    let c = with_gradient("integration_portal_url = \"\"\nsupport_page_url = \" \"").unwrap();
    assert_eq!(c.gradient.integration_portal_url, None);
    assert_eq!(c.gradient.support_page_url, None);
    let c = with_gradient(
        "integration_portal_url = \"https://portal.example/connect\"\nsupport_page_url = \"http://localhost:8080/help\"",
    )
    .unwrap();
    assert_eq!(
        c.gradient.integration_portal_url.unwrap().as_str(),
        "https://portal.example/connect"
    );
    assert_eq!(
        c.gradient.support_page_url.unwrap().as_str(),
        "http://localhost:8080/help"
    );
    let Err(ConfigError::Invalid { problems, .. }) = with_gradient(
        "integration_portal_url = \"http://portal.example\"\nsupport_page_url = \"nope\"",
    ) else {
        panic!("plain http to a remote host and a non-URL are refused");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.key == "gradient.integration_portal_url" && p.message.contains("https")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.key == "gradient.support_page_url" && p.message.contains("not a URL")),
        "{problems:?}"
    );
}

#[test]
fn the_default_in_flight_bound_never_caps_the_rate_below_500_ms() {
    // Little's law: requests_per_second × 0.5 s must fit in flight at the defaults, even at the
    // highest rate allowed.
    let c = with_gradient("").unwrap();
    assert!(
        c.gradient.client.max_in_flight * 2 >= 100,
        "{:?}",
        c.gradient.client
    );
}
