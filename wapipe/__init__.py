"""wapipe: ERP -> Kafka -> WhatsApp Cloud API pipeline."""
