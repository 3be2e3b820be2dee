//! Record ids of entity types with subjects: `<subject>:<rest>`.

/// The subject of a record id: the part before the first `:`. `None` when the
/// id has no `:` or the part before it is empty.
pub fn subject_of(id: &str) -> Option<&str> {
    match id.split_once(':') {
        Some((subject, _)) if !subject.is_empty() => Some(subject),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::subject_of;

    #[test]
    fn subject_is_the_part_before_the_first_colon() {
        assert_eq!(subject_of("alice:profile"), Some("alice"));
        assert_eq!(subject_of("alice:cart:2024"), Some("alice"));
        assert_eq!(subject_of("alice:"), Some("alice"));
        assert_eq!(subject_of("u-42:x"), Some("u-42"));
    }

    #[test]
    fn no_subject_without_a_colon_or_with_an_empty_part() {
        assert_eq!(subject_of("alice"), None);
        assert_eq!(subject_of(""), None);
        assert_eq!(subject_of(":profile"), None);
        assert_eq!(subject_of(":"), None);
    }
}
