//! A daily metrics chart as inline SVG geometry: the template draws it, this computes it.
//! Spend is drawn as bars against the left scale (in the workspace's currency), clicks as a
//! line against the right scale; both scales start at zero and carry three labelled ticks,
//! and the dates run along the bottom. Every figure is formatted as on the cards and in chat.

use datahub_core::format::{money_in, thousands};
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

/// A labelled position on an axis.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    /// The plot area.
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    /// Spend per day as bars.
    pub bars: Vec<Bar>,
    pub bar_width: f64,
    /// Clicks per day as a polyline `x,y x,y ...`.
    pub clicks_line: String,
    /// The left scale (spend) and the right scale (clicks): y positions and labels.
    pub spend_ticks: Vec<Tick>,
    pub clicks_ticks: Vec<Tick>,
    /// Dates along the bottom: x positions and labels.
    pub dates: Vec<Tick>,
    pub spend_title: String,
    pub first_date: String,
    pub last_date: String,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 32.0;

pub fn build(points: &[DailyPoint], currency: &str) -> Option<Chart> {
    if points.is_empty() {
        return None;
    }
    let max_spend = nice_ceiling(points.iter().filter_map(|p| p.spend).fold(0.0, f64::max));
    let max_clicks = nice_ceiling(points.iter().map(|p| p.clicks).max().unwrap_or(0) as f64);
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let plot_height = bottom - top;
    let step = (right - left) / points.len() as f64;
    let y_of = |value: f64, max: f64| round(bottom - value / max * plot_height);
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let height = p.spend.map_or(0.0, |spend| spend / max_spend * plot_height);
            let spend = p.spend.map_or_else(
                || "not recorded".to_string(),
                |spend| money_in(currency, spend),
            );
            Bar {
                x: round(left + i as f64 * step + step * 0.15),
                y: round(bottom - height),
                height: round(height),
                label: format!("{}: spend {spend}, {} clicks", p.date, thousands(p.clicks)),
            }
        })
        .collect();
    let clicks_line = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = left + i as f64 * step + step / 2.0;
            format!("{},{}", round(x), y_of(p.clicks as f64, max_clicks))
        })
        .collect::<Vec<_>>()
        .join(" ");
    let fractions = [0.0, 0.5, 1.0];
    let spend_ticks = fractions
        .iter()
        .map(|f| Tick {
            at: y_of(max_spend * f, max_spend),
            label: money_in(currency, max_spend * f),
        })
        .collect();
    let clicks_ticks = fractions
        .iter()
        .map(|f| Tick {
            at: y_of(max_clicks * f, max_clicks),
            label: thousands((max_clicks * f).round() as i64),
        })
        .collect();
    let mut date_indexes = vec![0, points.len() / 2, points.len() - 1];
    date_indexes.dedup();
    let dates = date_indexes
        .into_iter()
        .map(|i| Tick {
            at: round(left + i as f64 * step + step / 2.0),
            label: points[i].date.clone(),
        })
        .collect();
    Some(Chart {
        width: WIDTH,
        height: HEIGHT,
        left,
        right,
        top,
        bottom,
        bars,
        bar_width: round(step * 0.7),
        clicks_line,
        spend_ticks,
        clicks_ticks,
        dates,
        spend_title: format!("Spend ({currency}), bars"),
        first_date: points[0].date.clone(),
        last_date: points[points.len() - 1].date.clone(),
    })
}

/// The top of a scale: `value` rounded up to 1, 2 or 5 times a power of ten (at least 1), so
/// the ticks at half and whole read as round numbers.
pub fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|top| *top >= value)
        .unwrap_or(10.0 * magnitude)
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_end_at_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(5555.55), 10_000.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn a_chart_has_both_scales_dates_and_formatted_labels() {
        let points: Vec<DailyPoint> = (1..=10)
            .map(|d| DailyPoint::new(format!("2025-12-{d:02}"), 1234.5, 1500))
            .collect();
        let chart = build(&points, "EUR").unwrap();
        let labels: Vec<&str> = chart.spend_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["EUR 0.00", "EUR 1,000.00", "EUR 2,000.00"]);
        let labels: Vec<&str> = chart
            .clicks_ticks
            .iter()
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labels, ["0", "1,000", "2,000"]);
        assert_eq!(chart.dates.len(), 3);
        assert_eq!(
            chart.bars[0].label,
            "2025-12-01: spend EUR 1,234.50, 1,500 clicks"
        );
    }
}
