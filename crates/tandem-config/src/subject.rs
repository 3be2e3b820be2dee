//! Record ids of entity types with subjects: `<subject>:<rest>`, or just
//! `<subject>` for the subject's own record (DESIGN.md: the subject is the id
//! up to the first `:`).

/// The subject of a record id: the part before the first `:`, or the whole id
/// when it has no `:`. `None` when that part is empty.
pub fn subject_of(id: &str) -> Option<&str> {
    let subject = id.split_once(':').map_or(id, |(subject, _)| subject);
    (!subject.is_empty()).then_some(subject)
}

/// What follows the subject in a record id (empty for the subject's own record).
pub fn rest_of(id: &str) -> &str {
    id.split_once(':').map_or("", |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::{rest_of, subject_of};

    #[test]
    fn subject_is_the_part_before_the_first_colon() {
        assert_eq!(subject_of("alice:profile"), Some("alice"));
        assert_eq!(subject_of("alice:cart:2024"), Some("alice"));
        assert_eq!(subject_of("alice:"), Some("alice"));
        assert_eq!(subject_of("u-42:x"), Some("u-42"));
        assert_eq!(rest_of("alice:cart:2024"), "cart:2024");
    }

    #[test]
    fn an_id_without_a_colon_is_the_subjects_own_record() {
        assert_eq!(subject_of("alice"), Some("alice"));
        assert_eq!(rest_of("alice"), "");
    }

    #[test]
    fn no_subject_when_the_part_before_the_colon_is_empty() {
        assert_eq!(subject_of(""), None);
        assert_eq!(subject_of(":profile"), None);
        assert_eq!(subject_of(":"), None);
    }
}
