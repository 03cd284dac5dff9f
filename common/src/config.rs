//! Config values shared by every stage: durations and byte sizes as people write them
//! (`30s`, `5m`, `64MiB`), and the loader that picks YAML or TOML by file extension.
//!
//! Easy to get wrong: units. Sizes accept both SI (`MB` = 10^6) and IEC (`MiB` = 2^20) suffixes,
//! and a bare number is bytes, so `64MB` and `64MiB` are different and both mean what they say.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but does not parse or does not fit the schema.
    #[error("{}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the position when the parser gives one.
        message: String,
    },
    /// The file parsed, but a value is not acceptable.
    #[error("{}: {field}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, as a path such as `sinks[1].max_file_bytes`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A value a config file may hold but that is not acceptable: the field, as a path under the
/// part that was checked (`batch.max_bytes`), and why. Checks deep in a config return it; the
/// caller puts its own place in front ([`FieldError::under`]) and the file around it
/// ([`FieldError::in_file`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, e.g. `sinks[1].batch.max_bytes`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `field` is not acceptable, because of `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error seen from one level up: the field becomes `prefix.field`.
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        self
    }

    /// The error as the file's: [`ConfigError::Invalid`] naming `path` and the field.
    pub fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            field: self.field,
            message: self.message,
        }
    }
}

/// Reads `path` and deserialises it as TOML when it ends in `.toml`, else as YAML.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Parse`] when it is not
/// valid for `T` (the message carries the parser's line and column).
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_text(&text, path)
}

/// Deserialises `text` (named `path` in errors) as TOML or YAML by the path's extension.
///
/// # Errors
/// [`ConfigError::Parse`] when the text is not valid for `T`.
pub fn parse_text<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let is_toml = path.extension().is_some_and(|ext| ext == "toml");
    let parsed = if is_toml {
        toml::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message: message.trim_end().to_owned(),
    })
}

/// A duration written as humans do: `250ms`, `30s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A stage's `--linger`: a duration up to 1 s (a stage that waits longer looks stuck).
    ///
    /// # Errors
    /// When `text` is not a duration or is longer than 1 s.
    pub fn parse_linger(text: &str) -> Result<Self, String> {
        let linger: Self = text.parse()?;
        if linger.0 > Duration::from_secs(1) {
            return Err(format!("{text} is longer than 1s"));
        }
        Ok(linger)
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| format!("{e} in {text:?} (use e.g. 500ms, 30s, 5m, 1h)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size: `4096`, `64KiB`, `16MiB`, `1GiB`, `10MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size (use e.g. 4096, 64KiB, 16MiB, 1GiB)"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {text:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_gains_its_place_level_by_level_and_names_the_file() {
        let error = FieldError::new("batch.max_bytes", "must be at least 1KiB")
            .under("")
            .under("sinks[2]");
        assert_eq!(error.field, "sinks[2].batch.max_bytes");
        assert_eq!(FieldError::new("", "bad").under("alerts").field, "alerts");
        assert_eq!(
            error.in_file(Path::new("/etc/f.yaml")).to_string(),
            "/etc/f.yaml: sinks[2].batch.max_bytes: must be at least 1KiB"
        );
    }

    #[test]
    fn sizes_parse_with_si_and_iec_units() {
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().0, 65536);
        assert_eq!("16MiB".parse::<ByteSize>().unwrap().0, 16 << 20);
        assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert_eq!(" 1 GiB ".parse::<ByteSize>().unwrap().0, 1 << 30);
    }

    #[test]
    fn bad_sizes_say_what_is_accepted() {
        let err = "12 parsecs".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("unknown size unit \"parsecs\""), "{err}");
        let err = "MiB".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("not a size"), "{err}");
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_and_errors_show_examples() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        let err = "soon".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("use e.g. 500ms"), "{err}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        size: ByteSize,
        every: HumanDuration,
    }

    #[test]
    fn yaml_and_toml_both_load_and_errors_name_the_file() {
        let yaml: Sample = parse_text("size: 1MiB\nevery: 5s\n", Path::new("a.yaml")).unwrap();
        assert_eq!(yaml.size.0, 1 << 20);
        let toml: Sample =
            parse_text("size = 2048\nevery = \"1m\"\n", Path::new("a.toml")).unwrap();
        assert_eq!(toml.every.0, Duration::from_secs(60));
        let err = parse_text::<Sample>("size: 1MiB\nevry: 5s\n", Path::new("conf/b.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conf/b.yaml: "), "{err}");
        assert!(err.contains("evry"), "{err}");
    }
}
