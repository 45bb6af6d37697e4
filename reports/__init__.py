"""Turn a bench run (results.json) into a report: tables, charts and a lab handout."""
