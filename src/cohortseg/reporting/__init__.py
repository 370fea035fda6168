"""Layer 7: what people look at: the report's figures and HTML pages, and the QC selection."""
