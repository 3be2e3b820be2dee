//! `timeline.svg`, written by hand: the six phases as bands along a time
//! axis, the request outcomes over time as stacked rates (ok, failover,
//! refused, error), the worst replication lag over time as a line, and
//! markers for isolation, detection and rerouting. Pure string building; every
//! text is escaped so the document is well-formed XML.

use std::fmt::Write;

use super::journal::RequestRecord;
use super::measure::{classify, Class};
use super::report::PhaseReport;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const BANDS_Y: f64 = 40.0;
const BANDS_H: f64 = 28.0;
const RATE_Y: f64 = 95.0;
const RATE_H: f64 = 150.0;
const LAG_Y: f64 = 285.0;
const LAG_H: f64 = 110.0;
const AXIS_Y: f64 = LAG_Y + LAG_H;
const HEIGHT: f64 = AXIS_Y + 70.0;
/// Most bars of the outcome chart.
const BINS_MAX: usize = 120;

const PHASE_COLORS: [&str; 6] = ["#dbeafe", "#fde68a", "#fecaca", "#e9d5ff", "#bbf7d0", "#e5e7eb"];

fn class_color(c: Class) -> &'static str {
    match c {
        Class::Ok => "#16a34a",
        Class::Failover => "#2563eb",
        Class::Refused => "#f59e0b",
        Class::Error => "#dc2626",
    }
}

/// Escape text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// What the picture shows.
pub struct Timeline<'a> {
    pub title: String,
    pub target: &'a str,
    pub phases: &'a [PhaseReport],
    pub records: &'a [RequestRecord],
    /// `(t, worst lag in seconds)`.
    pub lag: &'a [(f64, f64)],
    /// Vertical markers: `(t, label)`.
    pub marks: Vec<(f64, String)>,
}

/// A "nice" axis step (1, 2, 5 × 10^n) giving about `ticks` ticks over `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

pub fn render(t: &Timeline<'_>) -> String {
    let end = t
        .phases
        .iter()
        .map(|p| p.offset_seconds + p.duration_seconds)
        .chain(t.records.iter().map(|r| r.done_s))
        .chain(t.lag.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |s: f64| LEFT + (s.clamp(0.0, end) / end) * plot_w;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ =
        writeln!(o, r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(&t.title)
    );

    // Phases: bands on top, and faint bands behind the charts.
    let _ = writeln!(o, r#"<g id="phases">"#);
    for (i, p) in t.phases.iter().enumerate() {
        let (x0, x1) = (x(p.offset_seconds), x(p.offset_seconds + p.duration_seconds));
        let w = (x1 - x0).max(1.0);
        let color = PHASE_COLORS[i % PHASE_COLORS.len()];
        let stroke = if p.ok() { "#6b7280" } else { "#dc2626" };
        let _ = writeln!(
            o,
            r#"<rect x="{x0:.1}" y="{BANDS_Y}" width="{w:.1}" height="{BANDS_H}" fill="{color}" stroke="{stroke}"><title>{}</title></rect>"#,
            esc(&format!(
                "{}: {:.1} s from {:.1} s, {}",
                p.name,
                p.duration_seconds,
                p.offset_seconds,
                if p.ok() { "checks passed" } else { "a check failed" }
            ))
        );
        let _ = writeln!(
            o,
            r#"<rect x="{x0:.1}" y="{RATE_Y}" width="{w:.1}" height="{:.1}" fill="{color}" opacity="0.35"/>"#,
            AXIS_Y - RATE_Y
        );
        // Label only what fits (about 6 px per character).
        let label = if (p.name.len() as f64) * 6.0 < w { p.name.clone() } else { String::new() };
        if !label.is_empty() {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x0 + w / 2.0,
                BANDS_Y + BANDS_H / 2.0 + 4.0,
                esc(&label)
            );
        }
    }
    let _ = writeln!(o, "</g>");

    // Request outcomes: stacked counts per bin, as requests per second.
    let bins = ((end / 0.5).ceil() as usize).clamp(1, BINS_MAX);
    let bin_s = end / bins as f64;
    let mut counts = vec![[0u32; 4]; bins];
    for r in t.records {
        let b = ((r.done_s / bin_s) as usize).min(bins - 1);
        let c = classify(r, t.target);
        let k = Class::ALL.iter().position(|x| *x == c).expect("a class");
        counts[b][k] += 1;
    }
    let peak =
        counts.iter().map(|c| c.iter().sum::<u32>()).max().unwrap_or(0).max(1) as f64 / bin_s;
    let rate_max = nice_step(peak, 1.0).max(peak);
    let _ = writeln!(o, r#"<g id="requests">"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" >requests/s by outcome</text>"#,
        LEFT + 4.0,
        RATE_Y - 6.0
    );
    for (b, c) in counts.iter().enumerate() {
        let mut y = RATE_Y + RATE_H;
        let bx = x(b as f64 * bin_s);
        let bw = (x((b + 1) as f64 * bin_s) - bx - 0.5).max(0.5);
        for (k, n) in c.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = (*n as f64 / bin_s) / rate_max * RATE_H;
            y -= h;
            let _ = writeln!(
                o,
                r#"<rect x="{bx:.1}" y="{y:.1}" width="{bw:.1}" height="{h:.1}" fill="{}"><title>{} {}</title></rect>"#,
                class_color(Class::ALL[k]),
                n,
                Class::ALL[k].as_str()
            );
        }
    }
    axis_y(&mut o, RATE_Y, RATE_H, rate_max);
    let _ = writeln!(o, "</g>");

    // Worst replication lag over time.
    let lag_peak = t.lag.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let lag_max = nice_step(lag_peak.max(0.1), 1.0).max(lag_peak).max(0.1);
    let _ = writeln!(o, r#"<g id="lag">"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}">max replication lag (s)</text>"#,
        LEFT + 4.0,
        LAG_Y - 6.0
    );
    let points: Vec<String> = t
        .lag
        .iter()
        .map(|(s, l)| format!("{:.1},{:.1}", x(*s), LAG_Y + LAG_H - (l / lag_max) * LAG_H))
        .collect();
    if !points.is_empty() {
        let _ = writeln!(
            o,
            r##"<polyline fill="none" stroke="#7c3aed" stroke-width="1.5" points="{}"/>"##,
            points.join(" ")
        );
    }
    axis_y(&mut o, LAG_Y, LAG_H, lag_max);
    let _ = writeln!(o, "</g>");

    // Time axis.
    let _ = writeln!(o, r#"<g id="axis">"#);
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{AXIS_Y}" x2="{}" y2="{AXIS_Y}" stroke="#111827"/>"##,
        WIDTH - RIGHT
    );
    let step = nice_step(end, 10.0);
    let mut s = 0.0;
    while s <= end + 1e-9 {
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" y1="{AXIS_Y}" x2="{0:.1}" y2="{1}" stroke="#111827"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(s),
            AXIS_Y + 4.0,
            AXIS_Y + 16.0,
            fmt_num(s)
        );
        s += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="end">seconds since the drill started</text>"#,
        WIDTH - RIGHT,
        AXIS_Y + 30.0
    );
    let _ = writeln!(o, "</g>");

    // Markers.
    let _ = writeln!(o, r#"<g id="marks">"#);
    for (i, (s, label)) in t.marks.iter().enumerate() {
        let mx = x(*s);
        let _ = writeln!(
            o,
            r##"<line x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{AXIS_Y}" stroke="#111827" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10">{}</text>"##,
            BANDS_Y + BANDS_H,
            mx + 3.0,
            RATE_Y + 12.0 + 12.0 * i as f64,
            esc(label)
        );
    }
    let _ = writeln!(o, "</g>");

    // Legend.
    let _ = writeln!(o, r#"<g id="legend">"#);
    let ly = AXIS_Y + 48.0;
    let mut lx = LEFT;
    for c in Class::ALL {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 9.0,
            class_color(c),
            lx + 14.0,
            c.as_str()
        );
        lx += 90.0;
    }
    let _ = writeln!(
        o,
        r##"<line x1="{lx}" y1="{0}" x2="{1}" y2="{0}" stroke="#7c3aed" stroke-width="1.5"/><text x="{2}" y="{ly}">max replication lag</text>"##,
        ly - 4.0,
        lx + 14.0,
        lx + 18.0
    );
    let _ = writeln!(o, "</g>");
    o.push_str("</svg>\n");
    o
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// A left axis for a chart with `max` at the top.
fn axis_y(o: &mut String, y0: f64, h: f64, max: f64) {
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{y0}" x2="{LEFT}" y2="{}" stroke="#111827"/>"##,
        y0 + h
    );
    for frac in [0.0, 0.5, 1.0] {
        let y = y0 + h - frac * h;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"#,
            LEFT - 4.0,
            y + 3.0,
            fmt_num(max * frac)
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small well-formedness check: balanced tags, quoted attributes,
    /// escaped text. Returns the element names in document order.
    pub fn check_xml(doc: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = doc.trim_start();
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").ok_or("unterminated declaration")? + 2..];
        }
        let check_text = |t: &str| -> Result<(), String> {
            let mut s = t;
            while let Some(i) = s.find('&') {
                let end = s[i..].find(';').ok_or_else(|| format!("bare & in {t:?}"))?;
                let ent = &s[i + 1..i + end];
                if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                    return Err(format!("unknown entity &{ent};"));
                }
                s = &s[i + end..];
            }
            if t.contains('>') {
                return Err(format!("raw > in {t:?}"));
            }
            Ok(())
        };
        loop {
            let Some(lt) = rest.find('<') else {
                check_text(rest)?;
                break;
            };
            check_text(&rest[..lt])?;
            rest = &rest[lt..];
            let gt = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or_else(|| format!("</{name}> closes nothing"))?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad element name in <{tag}>"));
            }
            // Attributes: name="value" pairs.
            let mut attrs = body[name.len()..].trim();
            while !attrs.is_empty() {
                let eq =
                    attrs.find("=\"").ok_or_else(|| format!("attribute without =\" in <{tag}>"))?;
                let key = attrs[..eq].trim();
                if key.is_empty() || key.contains(char::is_whitespace) {
                    return Err(format!("bad attribute name {key:?} in <{name}>"));
                }
                let after = &attrs[eq + 2..];
                let close = after.find('"').ok_or("unterminated attribute")?;
                let value = &after[..close];
                if value.contains('<') {
                    return Err(format!("< in attribute of <{name}>"));
                }
                check_text(value)?;
                attrs = after[close + 1..].trim_start();
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        Ok(names)
    }

    #[test]
    fn the_checker_catches_broken_documents() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml("<a>x &amp; y</a>").is_ok());
        assert!(check_xml("<a>").is_err());
    }

    #[test]
    fn renders_well_formed_svg_with_every_phase() {
        let report = super::super::report::tests::sample();
        let mut records = Vec::new();
        for i in 0..200 {
            let t = i as f64 * 0.06;
            let mut r = super::super::measure::tests::rec(
                t,
                Some("eu-west"),
                "eu-west",
                Some(if i % 7 == 0 { 503 } else { 200 }),
                Some(if t > 4.0 { "eu-central" } else { "eu-west" }),
                Some(if t > 4.0 { "failover" } else { "home" }),
            );
            if i % 7 == 0 {
                r.error = Some("no_region_available".into());
            }
            records.push(r);
        }
        let lag: Vec<(f64, f64)> =
            (0..100).map(|i| (i as f64 * 0.12, (i % 30) as f64 * 0.3)).collect();
        let svg = render(&Timeline {
            title: "drill <eu-west> & \"isolate\"".into(),
            target: "eu-west",
            phases: &report.phases,
            records: &records,
            lag: &lag,
            marks: vec![(4.0, "isolated".into()), (5.2, "TTD <5.2 s>".into())],
        });
        let names = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names[0], "svg");
        assert!(names.iter().any(|n| n == "polyline"));
        for p in super::super::plan::PHASES {
            assert!(svg.contains(p), "{p} missing");
        }
        assert!(svg.contains("#2563eb") && svg.contains("#f59e0b"), "failover and refused bars");
    }

    #[test]
    fn empty_timeline_is_still_well_formed() {
        let svg = render(&Timeline {
            title: "empty".into(),
            target: "x",
            phases: &[],
            records: &[],
            lag: &[],
            marks: vec![],
        });
        check_xml(&svg).unwrap();
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(60.0, 10.0), 10.0);
        assert_eq!(nice_step(30.0, 10.0), 5.0);
        assert_eq!(nice_step(7.0, 1.0), 10.0);
        assert_eq!(nice_step(1.5, 1.0), 2.0);
    }
}
