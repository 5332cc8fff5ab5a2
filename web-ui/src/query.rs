//! Page state kept in the URL query string, so every view is bookmarkable, and the API
//! query each state asks for.

use edgefleet_codec::api::AgentStatus;

/// Page sizes the console accepts (`/api/agents?per_page=`).
pub const PAGE_SIZES: [usize; 4] = [25, 50, 100, 200];
/// Columns the console can sort on.
pub const SORT_KEYS: [&str; 7] = [
    "hostname",
    "os",
    "cpu",
    "mem",
    "disk",
    "last_seen",
    "status",
];

/// The host list: filters, sort and page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostQuery {
    pub q: String,
    pub status: Option<AgentStatus>,
    pub os: Option<String>,
    pub sort: &'static str,
    pub desc: bool,
    pub page: usize,
    pub per_page: usize,
    /// A group id (`/api/agents?group=`).
    pub group: Option<String>,
    /// A label selector as typed (`/api/agents?label=`, docs/api.md "Selectors").
    pub label: String,
}

impl Default for HostQuery {
    fn default() -> Self {
        HostQuery {
            q: String::new(),
            status: None,
            os: None,
            sort: "hostname",
            desc: false,
            page: 1,
            per_page: 50,
            group: None,
            label: String::new(),
        }
    }
}

impl HostQuery {
    /// Reads a `location.search` string (with or without the `?`). Unknown or invalid
    /// values fall back to the defaults, so a mangled bookmark still opens.
    pub fn parse(search: &str) -> HostQuery {
        let mut q = HostQuery::default();
        for (key, value) in pairs(search) {
            match key.as_str() {
                "q" => q.q = value,
                "status" => q.status = AgentStatus::parse(&value),
                "os" if !value.is_empty() => q.os = Some(value),
                "group" if !value.is_empty() => q.group = Some(value),
                "label" => q.label = value,
                "sort" => {
                    if let Some(k) = SORT_KEYS.into_iter().find(|k| *k == value) {
                        q.sort = k;
                    }
                }
                "order" => q.desc = value == "desc",
                "page" => q.page = value.parse().ok().filter(|p| *p >= 1).unwrap_or(1),
                "per_page" => {
                    q.per_page = value
                        .parse()
                        .ok()
                        .filter(|p| PAGE_SIZES.contains(p))
                        .unwrap_or(50)
                }
                _ => {}
            }
        }
        q
    }

    /// The query string for the browser's address bar: only what differs from the
    /// defaults, `?` included (empty for the defaults).
    pub fn to_search(&self) -> String {
        let d = HostQuery::default();
        let mut out = Vec::new();
        if !self.q.is_empty() {
            out.push(("q", self.q.clone()));
        }
        if let Some(s) = self.status {
            out.push(("status", s.as_str().to_string()));
        }
        if let Some(os) = &self.os {
            out.push(("os", os.clone()));
        }
        if let Some(g) = &self.group {
            out.push(("group", g.clone()));
        }
        if !self.label.is_empty() {
            out.push(("label", self.label.clone()));
        }
        if self.sort != d.sort {
            out.push(("sort", self.sort.to_string()));
        }
        if self.desc {
            out.push(("order", "desc".into()));
        }
        if self.page != 1 {
            out.push(("page", self.page.to_string()));
        }
        if self.per_page != d.per_page {
            out.push(("per_page", self.per_page.to_string()));
        }
        search_string(&out)
    }

    /// The `/api/agents` path for this state.
    pub fn api_path(&self) -> String {
        let mut params = vec![
            ("page", self.page.to_string()),
            ("per_page", self.per_page.to_string()),
            ("sort", self.sort.to_string()),
            ("order", if self.desc { "desc" } else { "asc" }.to_string()),
        ];
        let q = self.q.trim();
        if !q.is_empty() {
            params.push(("q", q.to_string()));
        }
        if let Some(s) = self.status {
            params.push(("status", s.as_str().to_string()));
        }
        if let Some(os) = &self.os {
            params.push(("os", os.clone()));
        }
        params.extend(self.scope());
        format!("/api/agents{}", search_string(&params))
    }

    /// The `/api/fleet/summary` path: the overview counts the same group and labels as the
    /// list (the console's summary takes no other filter).
    pub fn summary_path(&self) -> String {
        format!("/api/fleet/summary{}", search_string(&self.scope()))
    }

    fn scope(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(g) = &self.group {
            params.push(("group", g.clone()));
        }
        let label = self.label.trim();
        if !label.is_empty() {
            params.push(("label", label.to_string()));
        }
        params
    }

    /// Whether the list (and the overview) is narrowed to a group or by labels.
    pub fn is_scoped(&self) -> bool {
        self.group.is_some() || !self.label.trim().is_empty()
    }

    /// A click on a column header: ascending first, then descending; back to page 1.
    pub fn sorted_by(&self, key: &'static str) -> HostQuery {
        HostQuery {
            sort: key,
            desc: self.sort == key && !self.desc,
            page: 1,
            ..self.clone()
        }
    }

    /// Any filter change returns to page 1.
    pub fn filtered(&self, change: impl FnOnce(&mut HostQuery)) -> HostQuery {
        let mut next = self.clone();
        change(&mut next);
        next.page = 1;
        next
    }

    /// Filters cleared; the sort and page size stay.
    pub fn cleared(&self) -> HostQuery {
        HostQuery {
            sort: self.sort,
            desc: self.desc,
            per_page: self.per_page,
            ..HostQuery::default()
        }
    }

    pub fn has_filters(&self) -> bool {
        !self.q.trim().is_empty() || self.status.is_some() || self.os.is_some() || self.is_scoped()
    }

    /// The last page that has rows for `total` hosts (at least 1).
    pub fn last_page(&self, total: usize) -> usize {
        total.div_ceil(self.per_page).max(1)
    }
}

/// The audit log page: filters and page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub agent: String,
    pub action: String,
    pub page: usize,
}

impl AuditQuery {
    pub fn parse(search: &str) -> AuditQuery {
        let mut q = AuditQuery {
            page: 1,
            ..AuditQuery::default()
        };
        for (key, value) in pairs(search) {
            match key.as_str() {
                "agent" => q.agent = value,
                "action" => q.action = value,
                "page" => q.page = value.parse().ok().filter(|p| *p >= 1).unwrap_or(1),
                _ => {}
            }
        }
        q
    }

    pub fn to_search(&self) -> String {
        let mut out = Vec::new();
        if !self.agent.is_empty() {
            out.push(("agent", self.agent.clone()));
        }
        if !self.action.is_empty() {
            out.push(("action", self.action.clone()));
        }
        if self.page > 1 {
            out.push(("page", self.page.to_string()));
        }
        search_string(&out)
    }

    pub fn api_path(&self, per_page: usize) -> String {
        let mut params = vec![
            ("page", self.page.max(1).to_string()),
            ("per_page", per_page.to_string()),
        ];
        if !self.agent.trim().is_empty() {
            params.push(("agent", self.agent.trim().to_string()));
        }
        if !self.action.trim().is_empty() {
            params.push(("action", self.action.trim().to_string()));
        }
        format!("/api/audit{}", search_string(&params))
    }
}

/// The requirements of a label selector: the parts between commas outside parentheses
/// (`site in (a, b), hw=pi4` has two), trimmed, empty ones dropped.
pub fn requirements(selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(selector[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(selector[start..].trim().to_string());
    out.retain(|r| !r.is_empty());
    out
}

/// The selector with `requirement` added at the end, unless it is already there.
pub fn with_requirement(selector: &str, requirement: &str) -> String {
    let mut reqs = requirements(selector);
    for r in requirements(requirement) {
        if !reqs.contains(&r) {
            reqs.push(r);
        }
    }
    reqs.join(", ")
}

/// The selector without its requirement number `index`.
pub fn without_requirement(selector: &str, index: usize) -> String {
    let mut reqs = requirements(selector);
    if index < reqs.len() {
        reqs.remove(index);
    }
    reqs.join(", ")
}

/// `?a=1&b=x%20y`, or an empty string for no pairs.
pub fn search_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", body.join("&"))
}

/// The decoded `key=value` pairs of a query string.
pub fn pairs(search: &str) -> Vec<(String, String)> {
    search
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` and `+`; malformed escapes are kept as they are.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_an_empty_query_and_a_full_api_path() {
        let q = HostQuery::default();
        assert_eq!(q.to_search(), "");
        assert_eq!(
            q.api_path(),
            "/api/agents?page=1&per_page=50&sort=hostname&order=asc"
        );
        assert_eq!(HostQuery::parse(""), q);
    }

    #[test]
    fn host_state_round_trips_through_the_url() {
        let q = HostQuery {
            q: "pump 7/ä".into(),
            status: Some(AgentStatus::Offline),
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            sort: "cpu",
            desc: true,
            page: 3,
            per_page: 200,
            group: Some("ferries".into()),
            label: "site in (ferry-*, dock), !retired".into(),
        };
        let search = q.to_search();
        assert!(search.starts_with("?q=pump%207%2F%C3%A4&status=offline&os=Debian%20GNU"));
        assert_eq!(HostQuery::parse(&search), q);
        assert_eq!(
            q.api_path(),
            "/api/agents?page=3&per_page=200&sort=cpu&order=desc&q=pump%207%2F%C3%A4\
             &status=offline&os=Debian%20GNU%2FLinux%2012%20%28bookworm%29\
             &group=ferries&label=site%20in%20%28ferry-%2A%2C%20dock%29%2C%20%21retired"
        );
        assert_eq!(
            q.summary_path(),
            "/api/fleet/summary?group=ferries&label=site%20in%20%28ferry-%2A%2C%20dock%29%2C%20%21retired"
        );
        assert_eq!(HostQuery::default().summary_path(), "/api/fleet/summary");
    }

    #[test]
    fn group_and_label_are_filters_that_clear() {
        let q = HostQuery::parse("?group=pumps&label=hw%3Dpi4&page=3");
        assert_eq!(q.group.as_deref(), Some("pumps"));
        assert!(q.has_filters() && q.is_scoped());
        let cleared = q.cleared();
        assert!(!cleared.has_filters());
        assert_eq!(cleared.api_path(), HostQuery::default().api_path());
        // Blank values are no filter.
        assert!(!HostQuery::parse("?group=&label=%20").has_filters());
    }

    #[test]
    fn selectors_split_at_commas_outside_parentheses() {
        assert_eq!(
            requirements(" site in (a, b*) ,hw=pi4,, !retired "),
            ["site in (a, b*)", "hw=pi4", "!retired"]
        );
        assert!(requirements("  ").is_empty());
        let s = with_requirement("", "site=ferry-1");
        assert_eq!(s, "site=ferry-1");
        let s = with_requirement(&s, "hw=pi4");
        assert_eq!(s, "site=ferry-1, hw=pi4");
        assert_eq!(with_requirement(&s, "hw=pi4"), s, "no duplicates");
        assert_eq!(without_requirement(&s, 0), "hw=pi4");
        assert_eq!(without_requirement(&s, 7), s);
        assert_eq!(without_requirement("hw=pi4", 0), "");
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let q = HostQuery::parse("?sort=rm%20-rf&per_page=7&page=0&status=sleepy&x=1&%zz=");
        assert_eq!(q, HostQuery::default());
        assert_eq!(decode("a+b%2"), "a b%2");
        assert_eq!(decode("%41%zz"), "A%zz");
    }

    #[test]
    fn sorting_toggles_and_filters_return_to_page_one() {
        let q = HostQuery {
            page: 4,
            ..HostQuery::default()
        };
        let a = q.sorted_by("cpu");
        assert_eq!((a.sort, a.desc, a.page), ("cpu", false, 1));
        let b = a.sorted_by("cpu");
        assert_eq!((b.sort, b.desc), ("cpu", true));
        let c = b.sorted_by("cpu");
        assert!(!c.desc);
        let f = q.filtered(|f| f.os = Some("Alpine".into()));
        assert_eq!((f.page, f.os.as_deref()), (1, Some("Alpine")));
        assert!(f.has_filters());
        let cleared = HostQuery {
            per_page: 100,
            ..f.sorted_by("mem")
        }
        .cleared();
        assert!(!cleared.has_filters());
        assert_eq!((cleared.sort, cleared.per_page), ("mem", 100));
    }

    #[test]
    fn last_page_counts_partial_pages() {
        let q = HostQuery::default();
        assert_eq!(q.last_page(0), 1);
        assert_eq!(q.last_page(50), 1);
        assert_eq!(q.last_page(51), 2);
    }

    #[test]
    fn audit_state_round_trips() {
        let q = AuditQuery {
            agent: "abc".into(),
            action: "approve".into(),
            page: 2,
        };
        assert_eq!(AuditQuery::parse(&q.to_search()), q);
        assert_eq!(
            q.api_path(25),
            "/api/audit?page=2&per_page=25&agent=abc&action=approve"
        );
        assert_eq!(AuditQuery::parse("").page, 1);
    }
}
