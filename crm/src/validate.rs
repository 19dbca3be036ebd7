//! Input checks that collect every bad field before failing.

use crate::error::{Error, FieldError};

/// Collects field errors; `finish` fails with all of them at once.
#[derive(Debug, Default)]
pub(crate) struct Checks(Vec<FieldError>);

impl Checks {
    pub(crate) fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// A required, trimmed, single-line text of at most `max` characters.
    pub(crate) fn text(&mut self, field: &str, value: &str, max: usize) -> String {
        let v = value.trim();
        if v.is_empty() {
            self.fail(field, "must not be empty");
        } else {
            self.optional_text(field, Some(v), max);
        }
        v.to_owned()
    }

    /// An optional text: trimmed, empty becomes absent.
    pub(crate) fn optional_text(
        &mut self,
        field: &str,
        value: Option<&str>,
        max: usize,
    ) -> Option<String> {
        let v = value.map(str::trim).filter(|v| !v.is_empty())?;
        if v.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        } else if v.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
        Some(v.to_owned())
    }

    /// An email address, trimmed and lower-cased.
    pub(crate) fn email(&mut self, field: &str, value: &str) -> String {
        let v = value.trim().to_lowercase();
        if let Err(message) = check_email(&v) {
            self.fail(field, message);
        }
        v
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}

fn check_email(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("must not be empty");
    }
    if v.len() > 254 {
        return Err("must be at most 254 characters");
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces");
    }
    let Some((local, domain)) = v.split_once('@') else {
        return Err("must look like name@example.com");
    };
    let labels_ok = domain
        .split('.')
        .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if local.is_empty() || domain.contains('@') || !domain.contains('.') || !labels_ok {
        return Err("must look like name@example.com");
    }
    Ok(())
}

/// Normalises a MAC address to lower-case colon form (`aa:bb:cc:dd:ee:ff`); accepts
/// colons, dashes, Cisco dots or no separators.
pub(crate) fn normalize_mac(value: &str) -> Option<String> {
    let hex: String = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Some(pairs.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(check_email("a@example.com").is_ok());
        for bad in [
            "",
            "a",
            "a@b",
            "@b.com",
            "a@b@c.com",
            "a b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        let want = Some("aa:bb:cc:dd:ee:0f".to_owned());
        assert_eq!(normalize_mac("AA:BB:CC:DD:EE:0F"), want);
        assert_eq!(normalize_mac("aa-bb-cc-dd-ee-0f"), want);
        assert_eq!(normalize_mac("aabb.ccdd.ee0f"), want);
        assert_eq!(normalize_mac(" AABBCCDDEE0F "), want);
        assert_eq!(normalize_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(normalize_mac("gg:bb:cc:dd:ee:0f"), None);
    }
}
