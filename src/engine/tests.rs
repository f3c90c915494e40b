//! Unit tests for the inspection engine.
