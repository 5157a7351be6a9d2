//! Message catalogs of the staff page: one TOML file per language in
//! `authority/messages/`, compiled into the binary. Adding a language is adding a file
//! here and to [`CATALOG_SOURCES`]; a test checks that every catalog has exactly the
//! keys of the English one.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// `(language tag, catalog text)`; English first (the fallback).
pub const CATALOG_SOURCES: &[(&str, &str)] = &[
    ("en", include_str!("../../messages/en.toml")),
    ("de", include_str!("../../messages/de.toml")),
];

/// All catalogs.
#[derive(Debug, Clone)]
pub struct Catalogs {
    langs: Vec<(String, BTreeMap<String, String>)>,
}

/// One language's messages.
#[derive(Debug, Clone, Copy)]
pub struct Messages<'a> {
    /// The language tag.
    pub lang: &'a str,
    map: &'a BTreeMap<String, String>,
    fallback: &'a BTreeMap<String, String>,
}

impl Catalogs {
    /// Parse the built-in catalogs.
    pub fn load() -> Result<Catalogs> {
        let mut langs = Vec::new();
        for (tag, text) in CATALOG_SOURCES {
            let map: BTreeMap<String, String> = toml::from_str(text)
                .map_err(|e| Error::Config(format!("message catalog {tag}: {e}")))?;
            langs.push(((*tag).to_owned(), map));
        }
        if langs.is_empty() {
            return Err(Error::Config("no message catalog".into()));
        }
        Ok(Catalogs { langs })
    }

    /// The language tags, fallback first.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.langs.iter().map(|(t, _)| t.as_str())
    }

    /// Whether `tag` has a catalog.
    pub fn has(&self, tag: &str) -> bool {
        self.langs.iter().any(|(t, _)| t == tag)
    }

    /// The messages of `tag`, or of the fallback language.
    pub fn get(&self, tag: &str) -> Messages<'_> {
        let fallback = &self.langs[0];
        let (lang, map) = self
            .langs
            .iter()
            .find(|(t, _)| t == tag)
            .unwrap_or(fallback);
        Messages {
            lang,
            map,
            fallback: &fallback.1,
        }
    }

    /// Pick a language: the explicit choice if known, else the first known primary tag
    /// of an `Accept-Language` header, else the fallback.
    pub fn negotiate(&self, chosen: Option<&str>, accept_language: Option<&str>) -> &str {
        if let Some(c) = chosen.filter(|c| self.has(c)) {
            return self.get(c).lang;
        }
        if let Some(h) = accept_language {
            for part in h.split(',') {
                let tag = part.split(';').next().unwrap_or("").trim();
                let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
                if self.has(&primary) {
                    return self.get(&primary).lang;
                }
            }
        }
        &self.langs[0].0
    }
}

impl Messages<'_> {
    /// The message `key` (English if missing here, the key itself if missing there).
    pub fn t(&self, key: &str) -> String {
        self.map
            .get(key)
            .or_else(|| self.fallback.get(key))
            .cloned()
            .unwrap_or_else(|| key.to_owned())
    }

    /// The message `key` with `{0}` replaced by `arg`.
    pub fn t1(&self, key: &str, arg: &str) -> String {
        self.t(key).replace("{0}", arg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_has_the_english_keys_and_no_others() {
        let c = Catalogs::load().unwrap();
        let en: Vec<&String> = c.langs[0].1.keys().collect();
        assert!(en.len() > 40);
        for (tag, map) in &c.langs {
            assert_eq!(map.keys().collect::<Vec<_>>(), en, "catalog {tag}");
            for (k, v) in map {
                assert!(!v.trim().is_empty(), "{tag}.{k} is empty");
                let en_v = &c.langs[0].1[k];
                assert_eq!(
                    v.contains("{0}"),
                    en_v.contains("{0}"),
                    "{tag}.{k} placeholders"
                );
            }
        }
    }

    #[test]
    fn negotiation_prefers_the_choice_then_the_header() {
        let c = Catalogs::load().unwrap();
        assert_eq!(c.negotiate(Some("de"), Some("en")), "de");
        assert_eq!(c.negotiate(Some("xx"), Some("fr-CH, de-CH;q=0.8")), "de");
        assert_eq!(c.negotiate(None, Some("fr")), "en");
        assert_eq!(c.negotiate(None, None), "en");
        assert_eq!(c.get("de").t1("signed_in_as", "x"), "Angemeldet als x");
        assert_eq!(c.get("de").t("no_such_key"), "no_such_key");
    }
}
