//! The inline-SVG chart of one pair's pushed counts over time (pure: points in, markup out). No
//! script, no external asset: a polyline scaled into a small box, a dot per push, the first and
//! last figures as text.

use crate::time::Millis;

/// Width and height of a chart, in SVG user units.
const W: f64 = 240.0;
const H: f64 = 48.0;
const PAD: f64 = 4.0;

/// The SVG of `points` (time, count), oldest first; an empty string for none.
pub fn svg(points: &[(Millis, f64)]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let x = |t: Millis| {
        if t1 == t0 {
            W / 2.0
        } else {
            PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD)
        }
    };
    let y = |v: f64| {
        if max <= 0.0 {
            H - PAD
        } else {
            H - PAD - v / max * (H - 2.0 * PAD)
        }
    };
    let path: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let dots: String = points
        .iter()
        .map(|&(t, v)| format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"/>", x(t), y(v)))
        .collect();
    format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"pushed counts over time\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\"><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/>{dots}</svg>",
        path.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_scaled_into_the_box_oldest_left_highest_top() {
        assert_eq!(svg(&[]), "");
        let s = svg(&[(0, 0.0), (10, 5.0), (20, 10.0)]);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        assert!(
            s.contains("points=\"4.0,44.0 120.0,24.0 236.0,4.0\""),
            "{s}"
        );
        assert_eq!(s.matches("<circle").count(), 3);
        // One push: a dot in the middle.
        assert!(svg(&[(5, 3.0)]).contains("cx=\"120.0\" cy=\"4.0\""));
    }
}
