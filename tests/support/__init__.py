"""Test helpers: phantom DICOM writers, analytic shapes, cohort rows."""
