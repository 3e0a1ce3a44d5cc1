//! The loss chart's geometry: training and validation loss against the step, mapped
//! into a fixed SVG box (so the page's layout never moves as points arrive). Plain
//! arithmetic, tested natively; the page draws what [`layout`] returns.

/// The SVG's size in user units (the page renders it at this size).
pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 240.0;
/// Room for the axis labels: left, right, top, bottom.
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// At most this many training points are drawn (long runs are thinned evenly).
const MAX_POINTS: usize = 480;

/// Everything the page draws.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// The training loss as an SVG `points` list.
    pub train: String,
    /// The validation loss as an SVG `points` list, and each of its points.
    pub val: String,
    pub val_dots: Vec<(f64, f64)>,
    /// Horizontal grid lines: y and label.
    pub y_ticks: Vec<(f64, String)>,
    /// Step labels along the bottom: x and label.
    pub x_ticks: Vec<(f64, String)>,
    /// The plot area: x0, y0, x1, y1.
    pub area: (f64, f64, f64, f64),
}

/// Lays out `train` and `val` (step, loss) for a run of `total_steps`; the x axis
/// spans the whole run from the start, the y axis the losses seen so far.
pub fn layout(train: &[(u32, f64)], val: &[(u32, f64)], total_steps: u32) -> Layout {
    let (x0, y0, x1, y1) = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM);
    let finite = |p: &&(u32, f64)| p.1.is_finite();
    let losses = || train.iter().chain(val).filter(finite).map(|p| p.1);
    let (mut lo, mut hi) = losses().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-6 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    // A little air above and below the curves.
    let pad = 0.05 * (hi - lo);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
    let last_step = train.iter().chain(val).map(|p| p.0).max().unwrap_or(0);
    let steps = total_steps.max(last_step).max(1) as f64;
    let x = |step: u32| x0 + (x1 - x0) * step as f64 / steps;
    let y = |loss: f64| y1 - (y1 - y0) * (loss - lo) / (hi - lo);
    let points = |pts: &[(u32, f64)], stride: usize| -> String {
        let mut out = String::new();
        let kept = pts.iter().enumerate().filter(|(i, _)| i % stride == 0 || *i + 1 == pts.len()).map(|(_, p)| p);
        for p in kept.filter(finite) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("{:.1},{:.1}", x(p.0), y(p.1)));
        }
        out
    };
    let stride = train.len().div_ceil(MAX_POINTS).max(1);
    let y_ticks = (0..=4)
        .map(|i| {
            let v = lo + (hi - lo) * i as f64 / 4.0;
            (y(v), format!("{v:.2}"))
        })
        .collect();
    let x_ticks = (0..=4)
        .map(|i| {
            let step = (steps * i as f64 / 4.0).round() as u32;
            (x(step), step.to_string())
        })
        .collect();
    Layout {
        train: points(train, stride),
        val: points(val, 1),
        val_dots: val.iter().filter(finite).map(|p| (x(p.0), y(p.1))).collect(),
        y_ticks,
        x_ticks,
        area: (x0, y0, x1, y1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(points: &str) -> Vec<(f64, f64)> {
        points
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn points_stay_inside_the_box_and_a_falling_loss_goes_down() {
        let train: Vec<(u32, f64)> = (1..=30).map(|s| (s, 6.0 - s as f64 * 0.1)).collect();
        let val = [(0, 6.2), (10, 5.1), (30, 3.4)];
        let l = layout(&train, &val, 30);
        let (x0, y0, x1, y1) = l.area;
        let pts = parse(&l.train);
        assert_eq!(pts.len(), 30);
        for &(x, y) in pts.iter().chain(&l.val_dots) {
            assert!((x0..=x1).contains(&x) && (y0..=y1).contains(&y), "({x}, {y}) outside the plot");
        }
        // Screen y grows downwards, so a falling loss ends at a larger y.
        assert!(pts.last().unwrap().1 > pts[0].1, "a falling loss must end lower on the chart (larger y)");
        assert!((pts.last().unwrap().0 - x1).abs() < 0.1, "the last step of the run sits at the right edge");
        assert_eq!(l.val_dots.len(), 3);
        assert!((l.val_dots[0].0 - x0).abs() < 0.1, "step 0 (the base model) sits at the left edge");
    }

    #[test]
    fn the_x_axis_spans_the_whole_plan_from_the_first_step() {
        let l = layout(&[(1, 2.0), (2, 1.9)], &[], 100);
        let pts = parse(&l.train);
        assert!(pts[1].0 < l.area.0 + 0.05 * (l.area.2 - l.area.0), "two steps of 100 stay at the left");
        assert_eq!(l.x_ticks.last().unwrap().1, "100");
    }

    #[test]
    fn empty_flat_and_broken_inputs_still_lay_out() {
        assert_eq!(layout(&[], &[], 0).train, "");
        let flat = layout(&[(1, 3.0), (2, 3.0)], &[], 2);
        assert_eq!(parse(&flat.train).len(), 2);
        let broken = layout(&[(1, f64::NAN), (2, 3.0), (3, f64::INFINITY)], &[], 3);
        assert_eq!(parse(&broken.train).len(), 1);
    }

    #[test]
    fn long_runs_are_thinned() {
        let train: Vec<(u32, f64)> = (1..=5000).map(|s| (s, 1.0 / s as f64)).collect();
        let pts = parse(&layout(&train, &[], 5000).train);
        assert!(pts.len() <= MAX_POINTS + 1, "{} points", pts.len());
        assert!((pts.last().unwrap().0 - (WIDTH - RIGHT)).abs() < 0.1, "the newest point is always drawn");
    }
}
