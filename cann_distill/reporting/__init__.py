"""Transfer metrics, the report page and schema, run comparison and the dashboard."""
