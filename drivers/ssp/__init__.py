"""ITL SSP (unencrypted): frames (stuffing, CRC-16/CMS, sequence bit), protocol, driver."""
