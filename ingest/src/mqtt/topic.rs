//! MQTT topic filters and the templates that turn topic levels into tags.

use std::fmt;

/// A subscription's topic filter, as configured (possibly a shared subscription,
/// `$share/<group>/<filter>`), with the part that published topics are matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicFilter {
    /// What is sent to the broker in SUBSCRIBE.
    pub(crate) subscribe: String,
    /// The filter proper, without the `$share/<group>/` prefix.
    levels: Vec<String>,
}

impl TopicFilter {
    /// Parses and checks a filter: `+` and `#` only as whole levels, `#` only last.
    pub(crate) fn parse(filter: &str) -> Result<Self, String> {
        let proper = match filter.strip_prefix("$share/") {
            Some(rest) => {
                let (group, proper) = rest.split_once('/').ok_or_else(|| {
                    format!("shared subscription {filter:?} has no filter after the group name; expected $share/<group>/<filter>")
                })?;
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err(format!(
                        "shared subscription {filter:?} has an invalid group name {group:?}"
                    ));
                }
                proper
            }
            None => filter,
        };
        if proper.is_empty() {
            return Err("topic filter is empty".to_string());
        }
        let levels: Vec<String> = proper.split('/').map(str::to_string).collect();
        for (i, level) in levels.iter().enumerate() {
            if level.contains('#') && (level != "#" || i + 1 != levels.len()) {
                return Err(format!(
                    "topic filter {filter:?}: `#` must be a whole level and the last one"
                ));
            }
            if level.contains('+') && level != "+" {
                return Err(format!(
                    "topic filter {filter:?}: `+` must be a whole level"
                ));
            }
        }
        Ok(Self {
            subscribe: filter.to_string(),
            levels,
        })
    }

    /// Whether a published topic matches (MQTT 3.1.1 §4.7 / MQTT 5 §4.7 rules, including
    /// that wildcards at the first level do not match topics starting with `$`).
    pub(crate) fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && matches!(self.levels[0].as_str(), "+" | "#") {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level.as_str() {
                "#" => return true,
                "+" => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_levels.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }
}

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal this text.
    Literal(String),
    /// Any one level, captured as this tag.
    Capture(String),
    /// Any one level, ignored (`+`).
    Any,
    /// Any number of remaining levels, ignored (`#`, last only).
    Rest,
}

/// Extracts tags from topic levels: `sites/{site_id}/devices/{device_id}/telemetry`
/// turns `sites/s1/devices/m7/telemetry` into `site_id=s1, device_id=m7`. `+` matches a
/// level without capturing it, a final `#` matches whatever follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicTemplate {
    text: String,
    levels: Vec<Level>,
}

impl TopicTemplate {
    /// Parses a template; errors name the offending level.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("topic template is empty".to_string());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "topic template {text:?}: {part:?} is not a valid capture; use {{name}} with letters, digits and _"
                    ));
                }
                if name == storage::TIME_COLUMN {
                    return Err(format!("topic template {text:?}: \"time\" cannot be a tag"));
                }
                if names.contains(&name) {
                    return Err(format!("topic template {text:?} captures {name:?} twice"));
                }
                names.push(name);
                Level::Capture(name.to_string())
            } else if *part == "+" {
                Level::Any
            } else if *part == "#" {
                if i + 1 != parts.len() {
                    return Err(format!(
                        "topic template {text:?}: `#` must be the last level"
                    ));
                }
                Level::Rest
            } else if part.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "topic template {text:?}: level {part:?} mixes text with a capture or wildcard; captures must be whole levels"
                ));
            } else {
                Level::Literal((*part).to_string())
            };
            levels.push(level);
        }
        Ok(Self {
            text: text.to_string(),
            levels,
        })
    }

    /// The tags this topic yields, or why it does not fit the template.
    pub(crate) fn extract(&self, topic: &str) -> Result<Vec<(String, String)>, String> {
        let mismatch = || {
            format!(
                "topic {topic:?} does not match the template {:?}",
                self.text
            )
        };
        let mut tags = Vec::new();
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return Ok(tags),
                Level::Any => {
                    topic_levels.next().ok_or_else(mismatch)?;
                }
                Level::Literal(text) => {
                    if topic_levels.next() != Some(text.as_str()) {
                        return Err(mismatch());
                    }
                }
                Level::Capture(name) => {
                    let value = topic_levels.next().ok_or_else(mismatch)?;
                    if value.is_empty() {
                        return Err(format!(
                            "topic {topic:?} has an empty level where the template {:?} expects {{{name}}}",
                            self.text
                        ));
                    }
                    tags.push((name.clone(), value.to_string()));
                }
            }
        }
        match topic_levels.next() {
            None => Ok(tags),
            Some(_) => Err(mismatch()),
        }
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_the_mqtt_spec_says() {
        let f = TopicFilter::parse("sites/+/devices/#").unwrap();
        assert!(f.matches("sites/s1/devices/m1/telemetry"));
        assert!(f.matches("sites/s1/devices"));
        assert!(!f.matches("sites/s1"));
        assert!(!f.matches("other/s1/devices/x"));
        let f = TopicFilter::parse("a/+/c").unwrap();
        assert!(f.matches("a/b/c"));
        assert!(f.matches("a//c"));
        assert!(!f.matches("a/b/c/d"));
        assert!(!f.matches("a/b"));
        assert!(
            !TopicFilter::parse("#")
                .unwrap()
                .matches("$SYS/broker/uptime")
        );
        assert!(TopicFilter::parse("#").unwrap().matches("x/y"));
    }

    #[test]
    fn shared_subscriptions_match_on_the_filter_proper() {
        let f = TopicFilter::parse("$share/gridlake/meters/+").unwrap();
        assert_eq!(f.subscribe, "$share/gridlake/meters/+");
        assert!(f.matches("meters/m1"));
        assert!(!f.matches("$share/gridlake/meters/m1"));
        let err = TopicFilter::parse("$share/gridlake").unwrap_err();
        assert!(err.contains("$share/<group>/<filter>"), "{err}");
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in ["", "a/#/b", "a/b#", "a/+x/c"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_capture_tags() {
        let t = TopicTemplate::parse("sites/{site_id}/devices/{device_id}/telemetry").unwrap();
        assert_eq!(
            t.extract("sites/s1/devices/m7/telemetry").unwrap(),
            vec![
                ("site_id".to_string(), "s1".to_string()),
                ("device_id".to_string(), "m7".to_string())
            ]
        );
        let err = t.extract("sites/s1/devices/m7").unwrap_err();
        assert!(err.contains("does not match the template"), "{err}");
        assert!(t.extract("sites/s1/devices/m7/telemetry/x").is_err());
        let err = t.extract("sites//devices/m7/telemetry").unwrap_err();
        assert!(err.contains("{site_id}"), "{err}");

        let t = TopicTemplate::parse("+/{device_id}/#").unwrap();
        assert_eq!(
            t.extract("tele/plug1/SENSOR").unwrap(),
            vec![("device_id".to_string(), "plug1".to_string())]
        );
    }

    #[test]
    fn bad_templates_name_the_level() {
        let err = TopicTemplate::parse("a/dev-{id}/b").unwrap_err();
        assert!(err.contains("dev-{id}"), "{err}");
        assert!(TopicTemplate::parse("a/#/b").is_err());
        assert!(TopicTemplate::parse("a/{}/b").is_err());
        assert!(
            TopicTemplate::parse("{x}/{x}")
                .unwrap_err()
                .contains("twice")
        );
        assert!(TopicTemplate::parse("{time}").is_err());
    }
}
