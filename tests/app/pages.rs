//! Pages a marketer trusts: every amount carries its currency, a provider without data says
//! "No data" instead of zeros (and a real zero stays a zero), severities say what they ask,
//! the chart has both scales and its dates, one number format on cards, chart and chat, and
//! Sign out on every page.

use crate::support::{start, two_workspaces, Browser, BOB};

#[test]
fn figures_carry_their_currency_and_one_format_everywhere() {
    let db = two_workspaces();
    let app = start(&db);
    let bob = Browser::signed_in(&app, BOB);
    // Bob's Google Ads: 10 days of 777 clicks and 5,555.55 spent.
    let overview = bob.get("/data").body;
    assert!(overview.contains("Amounts in USD."), "{overview}");
    assert!(overview.contains("<div class=\"value\">7,770</div>"));
    assert!(overview.contains("<div class=\"value\">USD 55,555.50</div>"));
    let provider = bob.get("/data/google-ads").body;
    assert!(
        provider.contains("spend USD 55,555.50, 7,770 clicks."),
        "{provider}"
    );
    assert!(
        provider.contains("spend USD 5,555.55, 777 clicks"),
        "a bar's label"
    );
    let csrf = bob.csrf();
    let sent = bob.post(
        "/chat",
        &[("csrf", &csrf), ("message", "How did Google Ads do?")],
    );
    assert_eq!(sent.status, 303);
    let chat = bob.get("/data").body;
    assert!(
        chat.contains("spend USD 55,555.50 (no earlier period to compare), 7,770 clicks, 420 conversions, USD 132.28 per conversion."),
        "{chat}"
    );
}

#[test]
fn no_data_is_not_zero() {
    let db = two_workspaces();
    db.client()
        .batch_execute(
            r#"INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks", "spend", "conversions")
               VALUES ('md_zero', 'bob', 'ws_b', 'meta-ads', date '2025-12-18', 0, 0, 0, 0)"#,
        )
        .unwrap();
    let app = start(&db);
    let bob = Browser::signed_in(&app, BOB);
    let overview = bob.get("/data").body;
    let card = |slug: &str| -> String {
        let start = overview.find(&format!("data-provider=\"{slug}\"")).unwrap();
        let end = overview[start..].find("</section>").unwrap();
        overview[start..start + end].to_string()
    };
    // Meta Ads reported zeros: zeros.
    let meta = card("meta-ads");
    assert!(
        meta.contains("<div class=\"value\">USD 0.00</div>"),
        "{meta}"
    );
    assert!(!meta.contains("No data"));
    // TikTok Ads has no row at all: no data, and no invented zero.
    let tiktok = card("tiktok-ads");
    assert!(tiktok.contains("No data: connect TikTok Ads"), "{tiktok}");
    assert!(!tiktok.contains("class=\"value\""), "{tiktok}");
}

#[test]
fn the_chart_has_its_scales_and_dates_and_severities_say_what_they_ask() {
    let db = two_workspaces();
    db.client()
        .batch_execute(
            r#"INSERT INTO "Insight" ("id", "userId", "workspaceId", "provider", "title", "body", "severity") VALUES
                 ('ins_w', 'alice', 'ws_a', 'google-ads', 'Click-through rate dropped', 'w', 'warning'),
                 ('ins_c', 'alice', 'ws_a', 'google-ads', 'Budget exhausted', 'c', 'critical')"#,
        )
        .unwrap();
    let app = start(&db);
    let alice = Browser::signed_in(&app, crate::support::ALICE);
    let page = alice.get("/data/google-ads").body;
    // Spend is 10.00 a day and clicks 11: scales of 0-10 and 0-20.
    for label in [
        "USD 0.00</text>",
        "USD 5.00</text>",
        "USD 10.00</text>",
        ">0</text>",
        ">10</text>",
        ">20</text>",
    ] {
        assert!(page.contains(label), "{label}: {page}");
    }
    for date in ["2025-12-09", "2025-12-14", "2025-12-18"] {
        assert!(page.contains(&format!(">{date}</text>")), "{date}");
    }
    assert!(page.contains("Spend (USD), bars") && page.contains("Clicks, line"));
    for meaning in ["For your information", "Worth a look", "Act now"] {
        assert!(
            page.contains(&format!("<span class=\"severity\">{meaning}</span>")),
            "{meaning}"
        );
    }
}

#[test]
fn every_page_has_sign_out() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, crate::support::ALICE);
    let mut paths = vec!["/data".to_string()];
    paths.extend(
        app::providers::PROVIDERS
            .iter()
            .map(|p| format!("/data/{}", p.slug)),
    );
    for path in paths {
        let page = alice.get(&path);
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.body.contains("action=\"/logout\"") && page.body.contains(">Sign out</button>"),
            "{path}"
        );
    }
}
