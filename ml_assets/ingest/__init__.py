"""Getting source rows into the platform: demo seeding and windowed ingestion."""
