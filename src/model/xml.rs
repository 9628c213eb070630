//! The few roxmltree walks libvirt's XML readers share (node devices in
//! `integrations::nodedev`, domains in `model::domain`).

/// The element children of `node` named `tag`, in document order.
pub fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

/// The first element child of `node` named `tag`.
pub fn child<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &'a str,
) -> Option<roxmltree::Node<'a, 'i>> {
    children(node, tag).next()
}

/// The element's text, trimmed; `None` when empty.
pub fn text_of(node: roxmltree::Node) -> Option<String> {
    node.text()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}
