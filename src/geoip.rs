//! Country of a client address from a MaxMind-format database (`.mmdb`).
//!
//! Reads both the GeoIP2/GeoLite2 layout (`country.iso_code`, falling back to
//! `registered_country.iso_code`) and the flat `country_code` layout of the free CC0
//! databases. The database is opened when a configuration is built, so a missing or corrupt
//! file is a configuration error; the reloader watches the file and a change rebuilds the
//! configuration. At run time an address the database does not know is country `--`.

use maxminddb::{PathElement, Reader};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// An ISO 3166-1 alpha-2 code in upper case, or `--` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country(pub [u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"--");

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("--")
    }

    /// A code as written in the configuration: two letters of a known country.
    pub fn parse(s: &str) -> Result<Country, String> {
        let up = s.trim().to_ascii_uppercase();
        let b = up.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_uppercase) {
            return Err(format!(
                "`{s}` is not a two-letter country code (e.g. \"VN\")"
            ));
        }
        if !ISO_3166.split(' ').any(|c| c == up) {
            return Err(format!("`{s}` is not an ISO 3166-1 country code"));
        }
        Ok(Country([b[0], b[1]]))
    }

    /// A code from a database: any two ASCII letters, else unknown.
    fn from_db(s: &str) -> Country {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => Country::UNKNOWN,
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An opened database.
pub struct GeoIp {
    pub path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeoIp({})", self.path.display())
    }
}

impl GeoIp {
    /// Opens and checks a database; the error says what is wrong with the file.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let reader = Reader::from_source(bytes)
            .map_err(|e| format!("{} is not a MaxMind database: {e}", path.display()))?;
        Ok(GeoIp {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// The country of an address; `--` when the database has no answer or a broken record.
    pub fn country(&self, ip: IpAddr) -> Country {
        let Ok(res) = self.reader.lookup(ip.to_canonical()) else {
            return Country::UNKNOWN;
        };
        const PATHS: [&[PathElement<'static>]; 3] = [
            &[PathElement::Key("country"), PathElement::Key("iso_code")],
            &[PathElement::Key("country_code")],
            &[
                PathElement::Key("registered_country"),
                PathElement::Key("iso_code"),
            ],
        ];
        for p in PATHS {
            if let Ok(Some(code)) = res.decode_path::<&str>(p) {
                return Country::from_db(code);
            }
        }
        Country::UNKNOWN
    }
}

/// ISO 3166-1 alpha-2 codes, plus `EU` and `AP` used by some databases for ranges.
const ISO_3166: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ \
BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ \
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT \
GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY \
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX \
MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS \
RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN \
TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK EU AP";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(Country::parse("vn").unwrap().as_str(), "VN");
        assert!(Country::parse("XX").is_err());
        assert!(Country::parse("VNM").is_err());
        assert!(Country::parse("1A").is_err());
        assert_eq!(Country::from_db("cn").as_str(), "CN");
        assert_eq!(Country::from_db("").as_str(), "--");
    }
}
