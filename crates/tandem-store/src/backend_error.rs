//! A storage library's errors as `StoreError::Backend`. The error type lives
//! in the engine, so the conversion is a method here rather than a `From`.

use crate::StoreError;

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// `.bk()?`: a backend library's result, its error as `StoreError::Backend`.
pub(crate) trait OrBackend<T> {
    fn bk(self) -> Result<T, StoreError>;
}

impl<T, E: std::fmt::Display> OrBackend<T> for Result<T, E> {
    fn bk(self) -> Result<T, StoreError> {
        self.map_err(backend)
    }
}
