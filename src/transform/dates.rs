//! Dates and date-times in a small strftime subset, parsed and formatted by
//! hand: the transform's hot path reads millions of them.
//!
//! Directives: `%Y` (4-digit year), `%m`, `%d`, `%H`, `%M`, `%S` (2 digits
//! each; parsing also takes 1 digit), `%j` is not supported, `%%` a percent
//! sign; anything else is matched literally.

use std::sync::OnceLock;

/// A calendar date as days since 1970-01-01, valid in years 1 to 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub i32);

/// A date and time of day (no time zone), as seconds since 1970-01-01T00:00:00.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub i64);

/// A checked date/time format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    items: Vec<Item>,
    has_time: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Literal(u8),
}

/// ISO 8601 date: `%Y-%m-%d`.
pub const ISO_DATE: &str = "%Y-%m-%d";
/// ISO 8601 date-time: `%Y-%m-%dT%H:%M:%S`.
pub const ISO_DATETIME: &str = "%Y-%m-%dT%H:%M:%S";

impl Format {
    /// Checks `text`, naming the first directive that is not supported.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut items = Vec::new();
        let mut bytes = text.bytes();
        while let Some(b) = bytes.next() {
            if b == b'"' || b == b'\\' || b.is_ascii_control() {
                return Err(format!("format {text:?} has a quote, backslash or control character"));
            }
            if b != b'%' {
                items.push(Item::Literal(b));
                continue;
            }
            items.push(match bytes.next() {
                Some(b'Y') => Item::Year,
                Some(b'm') => Item::Month,
                Some(b'd') => Item::Day,
                Some(b'H') => Item::Hour,
                Some(b'M') => Item::Minute,
                Some(b'S') => Item::Second,
                Some(b'%') => Item::Literal(b'%'),
                Some(other) => {
                    return Err(format!(
                        "format {text:?} uses %{}, which is not supported (%Y %m %d %H %M %S %% are)",
                        other as char
                    ))
                }
                None => return Err(format!("format {text:?} ends with a lone %")),
            });
        }
        if !items.contains(&Item::Year) || !items.contains(&Item::Month) || !items.contains(&Item::Day) {
            return Err(format!("format {text:?} needs %Y, %m and %d"));
        }
        let has_time = items.iter().any(|i| matches!(i, Item::Hour | Item::Minute | Item::Second));
        Ok(Format { items, has_time })
    }

    /// Parses `text` into (date, seconds into the day), or `None` if it does not fit.
    fn read(&self, text: &str) -> Option<(Date, i64)> {
        let s = text.as_bytes();
        let mut pos = 0;
        let (mut y, mut mo, mut d, mut h, mut mi, mut se) = (0, 0, 0, 0, 0, 0);
        for item in &self.items {
            match item {
                Item::Literal(b) => {
                    if s.get(pos) != Some(b) {
                        return None;
                    }
                    pos += 1;
                }
                Item::Year => y = digits(s, &mut pos, 4, 4)?,
                Item::Month => mo = digits(s, &mut pos, 1, 2)?,
                Item::Day => d = digits(s, &mut pos, 1, 2)?,
                Item::Hour => h = digits(s, &mut pos, 1, 2)?,
                Item::Minute => mi = digits(s, &mut pos, 1, 2)?,
                Item::Second => se = digits(s, &mut pos, 1, 2)?,
            }
        }
        if pos != s.len() || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        Some((Date::from_ymd(y, mo, d)?, i64::from(h * 3600 + mi * 60 + se)))
    }

    /// Parses a date (any time of day in the format is checked, then dropped).
    pub fn parse_date(&self, text: &str) -> Option<Date> {
        self.read(text).map(|(d, _)| d)
    }

    /// Parses a date-time (a format without a time reads as midnight).
    pub fn parse_datetime(&self, text: &str) -> Option<DateTime> {
        self.read(text).map(|(d, secs)| DateTime(i64::from(d.0) * 86_400 + secs))
    }

    /// Writes a date-time in this format. The output never needs JSON escaping:
    /// [`Format::parse`] refuses quotes, backslashes and control characters.
    pub fn write(&self, out: &mut Vec<u8>, value: DateTime) {
        let days = value.0.div_euclid(86_400);
        let secs = value.0.rem_euclid(86_400);
        let (y, m, d) = Date(days as i32).ymd();
        let two = |out: &mut Vec<u8>, n: i64| out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        for item in &self.items {
            match item {
                Item::Literal(b) => out.push(*b),
                Item::Year => {
                    two(out, y / 100);
                    two(out, y % 100);
                }
                Item::Month => two(out, m),
                Item::Day => two(out, d),
                Item::Hour => two(out, secs / 3600),
                Item::Minute => two(out, secs / 60 % 60),
                Item::Second => two(out, secs % 60),
            }
        }
    }

    /// `%Y-%m-%d`.
    pub fn iso_date() -> &'static Format {
        static ISO: OnceLock<Format> = OnceLock::new();
        ISO.get_or_init(|| Format::parse(ISO_DATE).expect("valid"))
    }

    /// `%Y-%m-%dT%H:%M:%S`.
    pub fn iso_datetime() -> &'static Format {
        static ISO: OnceLock<Format> = OnceLock::new();
        ISO.get_or_init(|| Format::parse(ISO_DATETIME).expect("valid"))
    }

    /// Whether the format has a time of day.
    pub fn has_time(&self) -> bool {
        self.has_time
    }
}

fn digits(s: &[u8], pos: &mut usize, min: usize, max: usize) -> Option<u32> {
    let mut n = 0u32;
    let start = *pos;
    while *pos < s.len() && *pos - start < max && s[*pos].is_ascii_digit() {
        n = n * 10 + u32::from(s[*pos] - b'0');
        *pos += 1;
    }
    (*pos - start >= min).then_some(n)
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

impl Date {
    /// The date for year, month and day, if it exists.
    pub fn from_ymd(y: u32, m: u32, d: u32) -> Option<Date> {
        const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
            return None;
        }
        let max = DAYS[(m - 1) as usize] + u32::from(m == 2 && is_leap(y));
        if d > max {
            return None;
        }
        // Days from civil (Howard Hinnant's algorithm).
        let (y, m, d) = (y as i64, m as i64, d as i64);
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date((era * 146_097 + doe - 719_468) as i32))
    }

    /// Year, month and day.
    pub fn ymd(self) -> (i64, i64, i64) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str) -> Format {
        Format::parse(s).unwrap()
    }

    #[test]
    fn dates_round_trip_through_days() {
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(0)));
        assert_eq!(Date::from_ymd(2000, 3, 1).unwrap().ymd(), (2000, 3, 1));
        assert_eq!(Date::from_ymd(1969, 12, 31), Some(Date(-1)));
        for (y, m, d) in [(1, 1, 1), (1600, 2, 29), (2024, 2, 29), (9999, 12, 31), (1999, 12, 31)] {
            let date = Date::from_ymd(y, m, d).unwrap();
            assert_eq!(date.ymd(), (y as i64, m as i64, d as i64));
        }
        assert_eq!(Date::from_ymd(2023, 2, 29), None);
        assert_eq!(Date::from_ymd(1900, 2, 29), None);
        assert_eq!(Date::from_ymd(2023, 4, 31), None);
        assert_eq!(Date::from_ymd(2023, 13, 1), None);
    }

    #[test]
    fn parse_and_format() {
        let iso = fmt(ISO_DATE);
        let d = iso.parse_date("2026-11-27").unwrap();
        let mut out = Vec::new();
        fmt("%d/%m/%Y").write(&mut out, DateTime(i64::from(d.0) * 86_400));
        assert_eq!(out, b"27/11/2026");
        assert_eq!(fmt("%d/%m/%Y").parse_date("7/3/2026"), Date::from_ymd(2026, 3, 7));
        let dt = fmt("%Y-%m-%d %H:%M:%S").parse_datetime("2026-11-27 09:05:03").unwrap();
        let mut out = Vec::new();
        Format::iso_datetime().write(&mut out, dt);
        assert_eq!(out, b"2026-11-27T09:05:03");
        assert_eq!(fmt(ISO_DATE).parse_datetime("2026-11-27").unwrap().0 % 86_400, 0);
    }

    #[test]
    fn bad_input_and_bad_formats() {
        let iso = fmt(ISO_DATE);
        for bad in ["", "2026-11", "2026-11-27x", "26-11-27", "2026-02-30", "2026/11/27", "２０２６-11-27"] {
            assert_eq!(iso.parse_date(bad), None, "{bad}");
        }
        assert_eq!(fmt("%Y-%m-%d %H:%M").parse_datetime("2026-01-01 24:00"), None);
        assert!(Format::parse("%Y-%b-%d").unwrap_err().contains("%b"));
        assert!(Format::parse("%Y-%m").unwrap_err().contains("%d"));
        assert!(Format::parse("%Y-%m-%d %").is_err());
        assert!(Format::parse("%Y-%m-%d\"").is_err());
    }
}
