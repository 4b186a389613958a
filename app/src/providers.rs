//! The ad and analytics providers Data Hub connects to, by URL slug.

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Provider {
    pub slug: &'static str,
    pub name: &'static str,
    /// Words a chat message may use for it.
    #[serde(skip)]
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

/// The provider a chat message is about, if it names exactly one.
pub fn mentioned_in(message: &str) -> Option<Provider> {
    let lower = message.to_lowercase();
    let found: Vec<Provider> = PROVIDERS
        .iter()
        .copied()
        .filter(|p| {
            lower.contains(&p.name.to_lowercase())
                || lower.contains(p.slug)
                || p.aliases.iter().any(|a| lower.contains(a))
        })
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        // "Google Analytics" also contains "google": prefer the longest name mentioned.
        many if !many.is_empty() => many
            .iter()
            .copied()
            .filter(|p| lower.contains(&p.name.to_lowercase()))
            .max_by_key(|p| p.name.len()),
        _ => None,
    }
}
