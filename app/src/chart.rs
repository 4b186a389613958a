//! A daily metrics chart as inline SVG geometry: the template draws it, this computes it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DailyPoint {
    pub date: String,
    /// `None` when the day's spend cannot be drawn (PostgreSQL's `numeric` holds `NaN`).
    pub spend: Option<f64>,
    pub clicks: i64,
}

impl DailyPoint {
    /// A day as read from the database: a spend that is not a finite number is no spend.
    pub fn new(date: String, spend: f64, clicks: i64) -> DailyPoint {
        DailyPoint {
            date,
            spend: spend.is_finite().then_some(spend),
            clicks,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub height: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    /// Spend per day as bars.
    pub bars: Vec<Bar>,
    pub bar_width: f64,
    /// Clicks per day as a polyline `x,y x,y ...`.
    pub clicks_line: String,
    pub max_spend: String,
    pub max_clicks: i64,
    pub first_date: String,
    pub last_date: String,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const PADDING: f64 = 24.0;

pub fn build(points: &[DailyPoint]) -> Option<Chart> {
    if points.is_empty() {
        return None;
    }
    let max_spend = points
        .iter()
        .filter_map(|p| p.spend)
        .fold(0.0, f64::max)
        .max(1.0);
    let max_clicks = points.iter().map(|p| p.clicks).max().unwrap_or(0).max(1);
    let plot_height = HEIGHT - 2.0 * PADDING;
    let step = (WIDTH - 2.0 * PADDING) / points.len() as f64;
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let height = p.spend.map_or(0.0, |spend| spend / max_spend * plot_height);
            let spend = p
                .spend
                .map_or_else(|| "not recorded".to_string(), |spend| format!("{spend:.2}"));
            Bar {
                x: round(PADDING + i as f64 * step + step * 0.15),
                y: round(HEIGHT - PADDING - height),
                height: round(height),
                label: format!("{}: spend {spend}, {} clicks", p.date, p.clicks),
            }
        })
        .collect();
    let clicks_line = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = PADDING + i as f64 * step + step / 2.0;
            let y = HEIGHT - PADDING - p.clicks as f64 / max_clicks as f64 * plot_height;
            format!("{},{}", round(x), round(y))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Chart {
        width: WIDTH,
        height: HEIGHT,
        bars,
        bar_width: round(step * 0.7),
        clicks_line,
        max_spend: format!("{max_spend:.2}"),
        max_clicks,
        first_date: points[0].date.clone(),
        last_date: points[points.len() - 1].date.clone(),
    })
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
