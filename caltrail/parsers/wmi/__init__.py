"""Exports of the license server's WMI classes (`Win32_TSIssuedLicense`,
`Win32_TSLicenseKeyPack`): CSV, ConvertTo-Xml, ConvertTo-Html and Checkmk agent output.
`rows` turns a table of any of them into records; `dates` and `codes` read their values."""
