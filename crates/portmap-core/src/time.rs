//! Moments in UTC, to the second: what a mapping's `expires` names, and how long is left until one.
//!
//! Parsing is strict RFC 3339 (`2026-12-24T00:00:00Z`, `2026-12-24T01:00:00+01:00`); the calendar
//! checks are `jiff`'s. Reading the clock is [`UtcTime::now`], which only the callers of `plan`
//! (backends, the session) use: planning itself takes the moment as a value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The earliest `expires` portmap accepts: a second after the Unix epoch (iptables' `--datestop`
/// counts from it, and names the last second a rule matches).
pub const MIN_EXPIRES: UtcTime = UtcTime(1);
/// The latest `expires` portmap accepts: 2038-01-19T03:14:07Z, the last second iptables' time
/// match (`--datestop`, a signed 32-bit count of seconds in older kernels' ABI) can hold.
pub const MAX_EXPIRES: UtcTime = UtcTime(i32::MAX as i64);
/// How far apart, in seconds, the expiry the kernel reports and the one the configuration asks for
/// may be and still count as the same: nft element timeouts are relative and set from the clock
/// at apply, so they come back as "now + remaining", a moment late by the time apply took.
pub const EXPIRES_TOLERANCE_SECONDS: i64 = 2;

/// A moment in UTC, in whole seconds since the Unix epoch. Its text (and serde) form is RFC 3339
/// in UTC: `2026-12-24T00:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(i64);

impl UtcTime {
    /// The moment `seconds` after the Unix epoch.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        UtcTime(seconds)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The system clock now, to the second (rounded down). Never called by `plan`.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Seconds from `now` until this moment (negative when it has passed).
    pub fn seconds_from(self, now: UtcTime) -> i64 {
        self.0.saturating_sub(now.0)
    }

    /// `2026-12-24T00:00:00` (UTC, no zone): iptables' `--datestart`/`--datestop` form.
    pub fn iptables_text(self) -> String {
        let mut text = self.to_string();
        text.pop();
        text
    }

    /// Read iptables' `YYYY-MM-DDThh:mm:ss` (UTC) back.
    pub fn from_iptables_text(text: &str) -> Option<Self> {
        if text.len() != 19 {
            return None;
        }
        parse_rfc3339(&format!("{text}Z")).ok()
    }
}

const RFC3339_RULE: &str =
    "write an RFC 3339 time with a zone, e.g. 2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00";

/// Parse RFC 3339 strictly: `YYYY-MM-DDThh:mm:ss`, optional fraction (dropped: portmap counts whole
/// seconds), then `Z` or `±hh:mm`. The message says what would be valid.
pub fn parse_rfc3339(text: &str) -> Result<UtcTime, String> {
    let shown = crate::validate::shown(text);
    let b = text.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(format!("`{shown}` is not an RFC 3339 time; {RFC3339_RULE}"));
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(format!(
                "`{shown}` has a `.` without digits after the seconds; {RFC3339_RULE}"
            ));
        }
        rest = &frac[n..];
    }
    let offset_ok = matches!(rest, "Z" | "z") || {
        let o = rest.as_bytes();
        o.len() == 6
            && matches!(o[0], b'+' | b'-')
            && o[1..3].iter().all(u8::is_ascii_digit)
            && o[3] == b':'
            && o[4..6].iter().all(u8::is_ascii_digit)
            && &rest[1..3] <= "23"
            && &rest[4..6] <= "59"
    };
    if rest.is_empty() {
        return Err(format!(
            "`{shown}` has no time zone; end it in Z for UTC or give an offset such as +01:00, e.g. 2026-12-24T00:00:00Z"
        ));
    }
    if !offset_ok {
        return Err(format!(
            "`{shown}` ends in `{}`, which is not a time zone; use Z for UTC or an offset ±hh:mm (hours 00-23), e.g. \
             2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00",
            crate::validate::shown(rest)
        ));
    }
    // The shape is RFC 3339's; jiff checks the calendar (month 13, February 30, hour 24, offsets
    // past ±23:59).
    let normal = text.replacen(['t'], "T", 1).replace('z', "Z");
    let ts: jiff::Timestamp = normal
        .parse()
        .map_err(|e| format!("`{shown}` is not a valid time ({e}); {RFC3339_RULE}"))?;
    Ok(UtcTime(ts.as_second()))
}

impl fmt::Display for UtcTime {
    /// `2026-12-24T00:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_second(self.0) {
            Ok(ts) => write!(f, "{}", ts.strftime("%Y-%m-%dT%H:%M:%SZ")),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl FromStr for UtcTime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_rfc3339(text)
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rfc3339(&text).map_err(de::Error::custom)
    }
}

/// A duration for people, in its two largest units: `3d 4h`, `5m 10s`, `45s`.
pub fn duration_text(seconds: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut left = seconds;
    for (size, unit) in units {
        if left >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
        if parts.len() == 2 || (!parts.is_empty() && left == 0) {
            break;
        }
    }
    parts.join(" ")
}

/// When a mapping expires, for people, as seen at `now`: `expires 2026-12-24T00:00:00Z, in 3d 4h`
/// or `expired 2026-12-24T00:00:00Z, 5m ago`; without `now`, only the moment.
pub fn expires_text(expires: UtcTime, now: Option<UtcTime>) -> String {
    match now.map(|n| expires.seconds_from(n)) {
        None => format!("expires {expires}"),
        Some(left) if left > 0 => format!("expires {expires}, in {}", duration_text(left.unsigned_abs())),
        Some(left) => format!("expired {expires}, {} ago", duration_text(left.unsigned_abs())),
    }
}

/// Whether `expires` has come at `now` (a mapping expires at the second it names).
pub fn is_expired(expires: Option<UtcTime>, now: Option<UtcTime>) -> bool {
    matches!((expires, now), (Some(e), Some(n)) if e <= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_zone_or_offset() {
        let z = parse_rfc3339("2026-12-24T00:00:00Z").unwrap();
        assert_eq!(z.to_string(), "2026-12-24T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-12-24T01:00:00+01:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2026-12-23T19:00:00-05:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2026-12-24t00:00:00.999z").unwrap(), z);
        assert_eq!(z.iptables_text(), "2026-12-24T00:00:00");
        assert_eq!(UtcTime::from_iptables_text("2026-12-24T00:00:00"), Some(z));
        assert_eq!(UtcTime::from_unix_seconds(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(MAX_EXPIRES.to_string(), "2038-01-19T03:14:07Z");
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2026-12-24",
            "2026-12-24T00:00:00",
            "2026-12-24 00:00:00Z",
            "2026-12-24T00:00Z",
            "20261224T000000Z",
            "2026-12-24T00:00:00+0100",
            "2026-12-24T00:00:00+24:00",
            "2026-12-24T00:00:00+01:60",
            "2026-12-24T00:00:00.Z",
            "2026-13-24T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-24T24:00:00Z",
            "2026-12-24T00:00:00Z[UTC]",
            "tomorrow",
        ] {
            let e = parse_rfc3339(bad).unwrap_err();
            assert!(e.contains("2026-12-24T00:00:00Z"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(45), "45s");
        assert_eq!(duration_text(300), "5m");
        assert_eq!(duration_text(310), "5m 10s");
        assert_eq!(duration_text(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        let t = parse_rfc3339("2026-12-24T00:00:00Z").unwrap();
        let now = UtcTime::from_unix_seconds(t.unix_seconds() - 3 * 86_400 - 4 * 3600);
        assert_eq!(
            expires_text(t, Some(now)),
            "expires 2026-12-24T00:00:00Z, in 3d 4h"
        );
        let later = UtcTime::from_unix_seconds(t.unix_seconds() + 300);
        assert_eq!(
            expires_text(t, Some(later)),
            "expired 2026-12-24T00:00:00Z, 5m ago"
        );
        assert!(is_expired(Some(t), Some(t)));
        assert!(!is_expired(Some(t), None));
    }
}
