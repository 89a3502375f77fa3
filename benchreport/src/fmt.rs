//! Number formatting shared by every table: times (ps/ns/µs/ms), rates, ratios (`1.07x`),
//! shares, and the `%g`-style "significant digits" rule the tables have always used (the
//! former Python writers' `{:.3g}`), reproduced exactly so that ported tables stay identical.

/// `x` with `digits` significant digits, trailing zeros dropped, in scientific notation
/// (`1e+03`) only when the exponent is below -4 or at least `digits`: the rule of C's and
/// Python's `%g`.
pub fn sig(x: f64, digits: usize) -> String {
    let digits = digits.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // The exponent after rounding to `digits` digits decides the notation.
    let sci = format!("{:.*e}", digits - 1, x);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} writes an integer exponent");
    if exp < -4 || exp >= digits as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_zeros(mantissa), exp.unsigned_abs())
    } else {
        let decimals = (digits as i32 - 1 - exp) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

/// `s` without the trailing zeros of its fraction (and without a bare trailing dot).
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A time given in nanoseconds, with three significant digits and a unit that keeps it
/// short: `256 ps`, `1.07 ns`, `12.3 µs`, `4.5 ms`; `-` when there is none.
pub fn time(ns: Option<f64>) -> String {
    let Some(ns) = ns else {
        return "-".into();
    };
    if ns < 1.0 {
        format!("{:.0} ps", ns * 1000.0)
    } else if ns < 1000.0 {
        format!("{} ns", sig(ns, 3))
    } else if ns < 1e6 {
        format!("{} µs", sig(ns / 1e3, 3))
    } else {
        format!("{} ms", sig(ns / 1e6, 3))
    }
}

/// Events per second: `5.12 M/s`, `812.3 k/s`, `950 /s`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

/// A share of calls (0.0 to 1.0) in percent, with two significant digits so that small
/// shares stay visible: `0.13%`, `12%`, `0%`.
pub fn share(v: f64) -> String {
    if v == 0.0 {
        "0%".into()
    } else {
        format!("{}%", sig(100.0 * v, 2))
    }
}

/// The ratio `a / b` as `1.07x`; `-` when `a` is missing or `b` is missing or zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// An integer with thousands separators: `1,000,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The median of `v` as the tables take it: the middle value, or the mean of the two middle
/// values of an even count (Python's `statistics.median`); `None` for no values.
pub fn median(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_follows_percent_g() {
        // Expected strings are what C's printf("%.3g") / Python's f"{x:.3g}" print.
        let cases = [
            (0.256, 3, "0.256"),
            (12.0, 3, "12"),
            (123.4, 3, "123"),
            (999.7, 3, "1e+03"),
            (0.000_012_34, 3, "1.23e-05"),
            (0.000_123_4, 3, "0.000123"),
            (1.5, 2, "1.5"),
            (0.125, 2, "0.12"),
            (2.0, 6, "2"),
            (0.30000000000000004, 6, "0.3"),
            (1234567.0, 6, "1.23457e+06"),
        ];
        for (x, d, want) in cases {
            assert_eq!(sig(x, d), want, "sig({x}, {d})");
        }
    }

    #[test]
    fn units_and_ratios() {
        assert_eq!(time(Some(0.2563)), "256 ps");
        assert_eq!(time(Some(1.0)), "1 ns");
        assert_eq!(time(Some(12_345.0)), "12.3 µs");
        assert_eq!(time(Some(4_500_000.0)), "4.5 ms");
        assert_eq!(time(None), "-");
        assert_eq!(ratio(Some(1.07), Some(1.0)), "1.07x");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(1.0)), "-");
        assert_eq!(rate(5_123_000.0), "5.12 M/s");
        assert_eq!(rate(812_340.0), "812.3 k/s");
        assert_eq!(rate(950.0), "950 /s");
        assert_eq!(share(0.0013), "0.13%");
        assert_eq!(share(0.0), "0%");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([]), None);
    }
}
