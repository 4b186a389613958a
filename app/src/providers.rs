//! The providers Data Hub connects to (the list itself is shared with xtask), and which one a
//! chat message is about.

pub use datahub_core::providers::{by_slug, Provider, PROVIDERS};

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
