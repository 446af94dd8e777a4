//! Outside-consumer configuration: whose burst budget it spends, how much per window, and the
//! pattern in time (`steady`, `bursty`, `ramp`), with its JSON/TOML shape and validation.

use serde::{Deserialize, Serialize};

/// How an outside consumer spreads its arrivals over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsidePattern {
    /// `per_window` arrivals evenly spaced over every burst window, until stopped.
    #[default]
    Steady,
    /// A block of `per_window` arrivals at one instant every `every_ms` (> 0), the first block
    /// at once, until stopped.
    Bursty { every_ms: u64 },
    /// A rate rising linearly from 0 to `per_window` per burst window over `ramp_ms` (> 0),
    /// falling linearly back to 0 over the next `ramp_ms`, then finished: about
    /// `per_window × ramp_ms / burst_window_ms` arrivals in all.
    Ramp { ramp_ms: u64 },
}

/// One outside consumer: traffic of owner (`app_id`, `portal_id`) that never passes through
/// the gateway. `per_window == 0` stops the owner's consumer.
///
/// JSON (and `[[outside]]` TOML) is flat, the pattern's name under `pattern` (default
/// `steady`) next to its one parameter:
/// `{"app_id":1,"portal_id":2,"per_window":30}`,
/// `{"app_id":1,"portal_id":2,"per_window":30,"pattern":"bursty","every_ms":7000}`,
/// `{"app_id":1,"portal_id":2,"per_window":30,"pattern":"ramp","ramp_ms":5000}`.
/// A parameter missing, zero, or given to a pattern it does not belong to is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OutsideWire", into = "OutsideWire")]
pub struct OutsideConfig {
    pub app_id: u64,
    pub portal_id: u64,
    pub per_window: u32,
    pub pattern: OutsidePattern,
}

impl OutsideConfig {
    /// The steady consumer (`pattern` left at its default).
    pub fn steady(app_id: u64, portal_id: u64, per_window: u32) -> Self {
        OutsideConfig {
            app_id,
            portal_id,
            per_window,
            pattern: OutsidePattern::Steady,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match self.pattern {
            OutsidePattern::Steady => {}
            OutsidePattern::Bursty { every_ms } => {
                anyhow::ensure!(every_ms > 0, "pattern \"bursty\" needs every_ms > 0")
            }
            OutsidePattern::Ramp { ramp_ms } => {
                anyhow::ensure!(ramp_ms > 0, "pattern \"ramp\" needs ramp_ms > 0")
            }
        }
        Ok(())
    }
}

/// The flat wire shape. A struct of its own because serde's internally tagged enums cannot
/// default a missing tag, and `flatten` would silently disable `deny_unknown_fields`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutsideWire {
    app_id: u64,
    portal_id: u64,
    per_window: u32,
    #[serde(default)]
    pattern: PatternName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ramp_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PatternName {
    #[default]
    Steady,
    Bursty,
    Ramp,
}

impl TryFrom<OutsideWire> for OutsideConfig {
    type Error = String;

    fn try_from(w: OutsideWire) -> Result<Self, String> {
        let pattern = match w.pattern {
            PatternName::Steady => OutsidePattern::Steady,
            PatternName::Bursty => OutsidePattern::Bursty {
                every_ms: w
                    .every_ms
                    .ok_or("pattern \"bursty\" needs every_ms (ms between blocks)")?,
            },
            PatternName::Ramp => OutsidePattern::Ramp {
                ramp_ms: w
                    .ramp_ms
                    .ok_or("pattern \"ramp\" needs ramp_ms (ms up, then as many down)")?,
            },
        };
        // A stray parameter means the sender believes in a pattern it did not ask for.
        if w.every_ms.is_some() && w.pattern != PatternName::Bursty {
            return Err("every_ms belongs to pattern \"bursty\"".into());
        }
        if w.ramp_ms.is_some() && w.pattern != PatternName::Ramp {
            return Err("ramp_ms belongs to pattern \"ramp\"".into());
        }
        let config = OutsideConfig {
            app_id: w.app_id,
            portal_id: w.portal_id,
            per_window: w.per_window,
            pattern,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

impl From<OutsideConfig> for OutsideWire {
    fn from(c: OutsideConfig) -> Self {
        let (pattern, every_ms, ramp_ms) = match c.pattern {
            OutsidePattern::Steady => (PatternName::Steady, None, None),
            OutsidePattern::Bursty { every_ms } => (PatternName::Bursty, Some(every_ms), None),
            OutsidePattern::Ramp { ramp_ms } => (PatternName::Ramp, None, Some(ramp_ms)),
        };
        OutsideWire {
            app_id: c.app_id,
            portal_id: c.portal_id,
            per_window: c.per_window,
            pattern,
            every_ms,
            ramp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<OutsideConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn shapes_round_trip_and_default_to_steady() {
        let steady = parse(r#"{"app_id":1,"portal_id":2,"per_window":30}"#).expect("steady");
        assert_eq!(steady, OutsideConfig::steady(1, 2, 30));
        for json in [
            r#"{"app_id":1,"portal_id":2,"per_window":30,"pattern":"steady"}"#,
            r#"{"app_id":1,"portal_id":2,"per_window":30,"pattern":"bursty","every_ms":7000}"#,
            r#"{"app_id":1,"portal_id":2,"per_window":30,"pattern":"ramp","ramp_ms":500}"#,
        ] {
            let c = parse(json).expect(json);
            assert_eq!(serde_json::to_string(&c).expect("serialize"), json);
        }
        let toml_cfg: OutsideConfig = toml::from_str(
            "app_id = 1\nportal_id = 2\nper_window = 5\npattern = \"ramp\"\nramp_ms = 9",
        )
        .expect("toml");
        assert_eq!(toml_cfg.pattern, OutsidePattern::Ramp { ramp_ms: 9 });
    }

    #[test]
    fn rejects_missing_zero_and_stray_parameters() {
        for (json, says) in [
            (r#""pattern":"bursty""#, "needs every_ms"),
            (r#""pattern":"bursty","every_ms":0"#, "every_ms > 0"),
            (r#""pattern":"ramp""#, "needs ramp_ms"),
            (r#""pattern":"ramp","ramp_ms":0"#, "ramp_ms > 0"),
            (r#""every_ms":10"#, "belongs to pattern \"bursty\""),
            (
                r#""pattern":"bursty","every_ms":5,"ramp_ms":5"#,
                "belongs to",
            ),
            (r#""pattern":"wavy""#, "unknown variant"),
            (r#""bogus":1"#, "unknown field"),
        ] {
            let body = format!(r#"{{"app_id":1,"portal_id":2,"per_window":3,{json}}}"#);
            let err = parse(&body).expect_err(&body);
            assert!(err.contains(says), "{body}: {err}");
        }
        let zero = OutsideConfig {
            pattern: OutsidePattern::Bursty { every_ms: 0 },
            ..OutsideConfig::steady(1, 2, 3)
        };
        assert!(zero.validate().is_err());
    }
}
