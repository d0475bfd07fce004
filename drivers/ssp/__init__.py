"""ITL SSP (unencrypted): frames (stuffing, CRC-16/CMS, sequence bit), protocol, note validator driver."""
