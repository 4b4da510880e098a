"""Sample-cohort construction from one real CT (see ``sample-data/README.md``)."""
