//! `[email]`: the SMTP url checked, the sender required with it, the login and template paths.

use super::{Reader, Section};

impl Reader<'_> {
    /// `[email]`: None when a key was refused; Some(None) when `smtp_url` is unset (no mail).
    pub(super) fn email(&mut self, s: Section) -> Option<Option<super::super::EmailConfig>> {
        let mut late: Vec<(&'static str, String)> = Vec::new();
        let out = self.finish(s, |s| {
            let url = s.opt_str("smtp_url")?;
            let from = s.opt_str("from")?;
            let credentials_file = s.opt_path("credentials_file")?;
            let templates_dir = s.opt_path("templates_dir")?;
            let Some(url) = url else {
                return Some(None);
            };
            let smtp_url = match super::super::email::check_smtp_url(&url) {
                Ok(u) => u,
                Err(e) => {
                    late.push(("email.smtp_url", e.to_string()));
                    return None;
                }
            };
            let Some(from) = from.filter(|f| f.contains('@')) else {
                late.push(("email.from", "required with email.smtp_url: an address such as `Vendor Billing <billing@vendor.example>`".into()));
                return None;
            };
            Some(Some(super::super::EmailConfig {
                smtp_url,
                from,
                credentials_file,
                templates_dir,
            }))
        });
        for (key, message) in late {
            self.problem(key, message);
        }
        out
    }
}
