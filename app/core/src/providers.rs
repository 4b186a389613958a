//! The ad and analytics providers Data Hub connects to, by URL slug: the app's pages, the
//! seed's data and the smoke test's checks all come from this one list.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub slug: &'static str,
    pub name: &'static str,
    /// Words a chat message may use for it.
    pub aliases: &'static [&'static str],
}

pub const PROVIDERS: [Provider; 6] = [
    Provider {
        slug: "google-ads",
        name: "Google Ads",
        aliases: &["google ads", "adwords"],
    },
    Provider {
        slug: "meta-ads",
        name: "Meta Ads",
        aliases: &["meta", "facebook", "instagram"],
    },
    Provider {
        slug: "linkedin-ads",
        name: "LinkedIn Ads",
        aliases: &["linkedin"],
    },
    Provider {
        slug: "tiktok-ads",
        name: "TikTok Ads",
        aliases: &["tiktok"],
    },
    Provider {
        slug: "microsoft-ads",
        name: "Microsoft Ads",
        aliases: &["microsoft", "bing"],
    },
    Provider {
        slug: "google-analytics",
        name: "Google Analytics",
        aliases: &["analytics", "ga4"],
    },
];

pub fn by_slug(slug: &str) -> Option<Provider> {
    PROVIDERS.iter().copied().find(|p| p.slug == slug)
}

/// The slugs in list order, e.g. for an SQL `text[]` parameter.
pub fn slugs() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.slug).collect()
}
