"""Tests of the SQL layer (queries/)."""
