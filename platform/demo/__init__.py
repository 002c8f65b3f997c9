"""The CRM demo data set (`xrm demo`)."""
