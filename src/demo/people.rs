//! Demo customers: where they live (zone, currency, phone plan, address style) and who
//! they are (Chinese or English names, gender, birth date, phone, email, address),
//! already in the normalized form the API stores (E.164 phones, lower-case emails).

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;

use super::rng::Rng;
use super::texts::Lang;
use crm_comms::db::customers::CustomerInsertForm;

/// Where a customer lives; decides zone, currency, phone and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Mainland China, Chinese name.
    China,
    /// An English-named customer living in Shanghai.
    ChinaExpat,
    /// US east coast.
    UsEast,
    /// US west coast.
    UsWest,
    /// United Kingdom.
    Uk,
    /// Germany.
    Germany,
    /// Singapore.
    Singapore,
    /// Australia.
    Australia,
}

/// Regions and their shares of the customers: two thirds in China.
const REGIONS: [(Region, f64); 8] = [
    (Region::China, 60.0),
    (Region::ChinaExpat, 6.0),
    (Region::UsEast, 8.0),
    (Region::UsWest, 6.0),
    (Region::Uk, 8.0),
    (Region::Germany, 4.0),
    (Region::Singapore, 4.0),
    (Region::Australia, 4.0),
];

impl Region {
    /// A region drawn with the customers' shares.
    pub fn draw(rng: &mut Rng) -> Region {
        let weights: Vec<f64> = REGIONS.iter().map(|(_, w)| *w).collect();
        REGIONS[rng.weighted(&weights)].0
    }

    /// The customer's time zone.
    pub fn zone(self) -> Tz {
        match self {
            Region::China | Region::ChinaExpat => Tz::Asia__Shanghai,
            Region::UsEast => Tz::America__New_York,
            Region::UsWest => Tz::America__Los_Angeles,
            Region::Uk => Tz::Europe__London,
            Region::Germany => Tz::Europe__Berlin,
            Region::Singapore => Tz::Asia__Singapore,
            Region::Australia => Tz::Australia__Sydney,
        }
    }

    /// The language of the customer's name and of most of what they write.
    pub fn lang(self) -> Lang {
        match self {
            Region::China => Lang::Zh,
            _ => Lang::En,
        }
    }

    /// Whether Chinese public holidays and shopping festivals apply.
    pub fn in_china(self) -> bool {
        matches!(self, Region::China | Region::ChinaExpat)
    }

    /// The currency the customer pays in, and its price per 1,000 CNY (rounded list
    /// prices, not a live rate).
    pub fn currency(self) -> (&'static str, i64) {
        match self {
            Region::China | Region::ChinaExpat => ("CNY", 1000),
            Region::UsEast | Region::UsWest | Region::Singapore | Region::Australia => ("USD", 140),
            Region::Uk => ("GBP", 110),
            Region::Germany => ("EUR", 130),
        }
    }

    /// The chat platforms the customer uses, with weights.
    pub fn chat_platforms(self) -> &'static [(&'static str, f64)] {
        match self {
            Region::China => &[("wechat", 85.0), ("web", 15.0)],
            Region::ChinaExpat => &[("wechat", 50.0), ("web", 30.0), ("whatsapp", 20.0)],
            _ => &[("whatsapp", 55.0), ("web", 45.0)],
        }
    }
}

/// One demo customer: where they live, how staff address them, and what is stored.
#[derive(Debug, Clone)]
pub struct Person {
    /// Where they live.
    pub region: Region,
    /// How staff address them ("王女士", "Ms Clarke").
    pub salutation: String,
    /// The customer as stored: name in their language, `Gender` value (0 unspecified,
    /// 1 male, 2 female, 3 other), birth date, address, E.164 phone, lower-case email
    /// (or empty); no tags yet.
    pub customer: CustomerInsertForm,
}

/// Chinese surnames (with pinyin) and their relative frequency.
const SURNAMES: &[(&str, &str, f64)] = &[
    ("王", "wang", 7.1),
    ("李", "li", 7.0),
    ("张", "zhang", 6.7),
    ("刘", "liu", 5.4),
    ("陈", "chen", 4.5),
    ("杨", "yang", 3.1),
    ("黄", "huang", 2.2),
    ("赵", "zhao", 2.0),
    ("吴", "wu", 2.0),
    ("周", "zhou", 1.9),
    ("徐", "xu", 1.5),
    ("孙", "sun", 1.4),
    ("马", "ma", 1.3),
    ("朱", "zhu", 1.2),
    ("胡", "hu", 1.1),
    ("郭", "guo", 1.1),
    ("何", "he", 1.0),
    ("林", "lin", 1.0),
    ("高", "gao", 1.0),
    ("罗", "luo", 0.9),
    ("郑", "zheng", 0.9),
    ("梁", "liang", 0.8),
    ("谢", "xie", 0.7),
    ("宋", "song", 0.6),
    ("唐", "tang", 0.6),
    ("韩", "han", 0.5),
    ("冯", "feng", 0.5),
    ("邓", "deng", 0.5),
    ("曹", "cao", 0.4),
    ("欧阳", "ouyang", 0.1),
];

/// Chinese given names (with pinyin), female.
const GIVEN_FEMALE: &[(&str, &str)] = &[
    ("芳", "fang"),
    ("秀英", "xiuying"),
    ("娜", "na"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("艳", "yan"),
    ("娟", "juan"),
    ("霞", "xia"),
    ("婷", "ting"),
    ("雪", "xue"),
    ("欣怡", "xinyi"),
    ("梓涵", "zihan"),
    ("诗涵", "shihan"),
    ("雨萱", "yuxuan"),
    ("佳怡", "jiayi"),
    ("晓燕", "xiaoyan"),
    ("慧", "hui"),
    ("玲", "ling"),
    ("桂英", "guiying"),
];

/// Chinese given names (with pinyin), male.
const GIVEN_MALE: &[(&str, &str)] = &[
    ("伟", "wei"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("刚", "gang"),
    ("平", "ping"),
    ("辉", "hui"),
    ("鹏", "peng"),
    ("浩然", "haoran"),
    ("宇轩", "yuxuan"),
    ("子豪", "zihao"),
    ("俊杰", "junjie"),
    ("建华", "jianhua"),
    ("志强", "zhiqiang"),
];

const FIRST_FEMALE: &[&str] = &[
    "Emma",
    "Olivia",
    "Sophie",
    "Charlotte",
    "Amelia",
    "Grace",
    "Chloe",
    "Emily",
    "Hannah",
    "Lucy",
    "Isabella",
    "Mia",
    "Zoe",
    "Laura",
    "Rachel",
    "Jessica",
];

const FIRST_MALE: &[&str] = &[
    "James", "Oliver", "William", "Jack", "Thomas", "Daniel", "Henry", "Samuel", "Benjamin",
    "Lucas", "Michael", "David", "Ethan", "Noah", "Ryan", "Matthew",
];

const LAST_NAMES: &[&str] = &[
    "Clarke", "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Roberts",
    "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards", "Green", "Hall",
    "Wood", "Harris", "Martin", "Cooper", "King", "Baker", "Turner", "Miller", "Anderson",
    "Murphy", "O'Brien", "Müller", "Schmidt", "Tan",
];

/// Chinese cities: name, districts, streets; Shanghai first and most common.
const CN_CITIES: &[(&str, f64, &[&str], &[&str])] = &[
    (
        "上海市",
        30.0,
        &["浦东新区", "徐汇区", "静安区", "闵行区", "长宁区"],
        &[
            "世纪大道",
            "张杨路",
            "漕溪北路",
            "南京西路",
            "淮海中路",
            "虹桥路",
        ],
    ),
    (
        "北京市",
        14.0,
        &["朝阳区", "海淀区", "东城区", "丰台区"],
        &["建国路", "中关村大街", "王府井大街", "望京街"],
    ),
    (
        "广州市",
        9.0,
        &["天河区", "越秀区", "海珠区"],
        &["天河路", "体育西路", "中山五路", "江南大道中"],
    ),
    (
        "深圳市",
        9.0,
        &["南山区", "福田区", "宝安区"],
        &["科技园南路", "深南大道", "华强北路"],
    ),
    (
        "杭州市",
        8.0,
        &["西湖区", "滨江区", "上城区"],
        &["文三路", "江南大道", "延安路"],
    ),
    (
        "成都市",
        6.0,
        &["锦江区", "武侯区", "高新区"],
        &["春熙路", "天府大道", "人民南路"],
    ),
    ("南京市", 5.0, &["玄武区", "鼓楼区"], &["中山路", "汉中路"]),
    (
        "武汉市",
        5.0,
        &["武昌区", "江汉区"],
        &["中南路", "解放大道"],
    ),
    (
        "西安市",
        4.0,
        &["雁塔区", "碑林区"],
        &["长安北路", "南大街"],
    ),
    (
        "苏州市",
        5.0,
        &["姑苏区", "工业园区"],
        &["人民路", "星湖街"],
    ),
];

/// Mobile prefixes of the three Chinese carriers.
const CN_MOBILE: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
    "156", "157", "158", "159", "176", "177", "180", "181", "186", "187", "188", "189", "198",
    "199",
];

/// `n` random decimal digits.
fn digits(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

/// A name as an email's local part: ASCII letters and digits only.
fn ascii_local(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'ü' | 'Ü' => out.push_str("ue"),
            'ö' | 'Ö' => out.push_str("oe"),
            'ä' | 'Ä' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ => {}
        }
    }
    out
}

/// A Chinese phone (mostly mobile), E.164.
fn china_phone(rng: &mut Rng) -> String {
    if rng.chance(0.06) {
        format!("+8621{}", digits(rng, 8))
    } else {
        format!("+86{}{}", rng.pick(CN_MOBILE), digits(rng, 8))
    }
}

/// A phone number of `region`, E.164.
fn phone(rng: &mut Rng, region: Region) -> String {
    match region {
        Region::China | Region::ChinaExpat => china_phone(rng),
        Region::UsEast | Region::UsWest => {
            let areas: &[&str] = if region == Region::UsEast {
                &["212", "646", "617", "215", "404"]
            } else {
                &["415", "206", "213", "503"]
            };
            format!(
                "+1{}{}{}",
                rng.pick(areas),
                rng.between(2, 9),
                digits(rng, 6)
            )
        }
        Region::Uk => format!("+447{}", digits(rng, 9)),
        Region::Germany => format!(
            "+49{}{}",
            rng.pick(&["151", "160", "170", "176"]),
            digits(rng, 8)
        ),
        Region::Singapore => format!("+65{}{}", rng.between(8, 9), digits(rng, 7)),
        Region::Australia => format!("+614{}", digits(rng, 8)),
    }
}

/// A postal address in `region`.
fn address(rng: &mut Rng, region: Region) -> String {
    let num = rng.between(1, 999);
    match region {
        Region::China => {
            let weights: Vec<f64> = CN_CITIES.iter().map(|c| c.1).collect();
            let (city, _, districts, streets) = CN_CITIES[rng.weighted(&weights)];
            let mut a = format!("{city}{}{}{num}号", rng.pick(districts), rng.pick(streets));
            if rng.chance(0.7) {
                a.push_str(&format!(
                    "{}栋{}{:02}室",
                    rng.between(1, 20),
                    rng.between(1, 32),
                    rng.between(1, 8)
                ));
            }
            a
        }
        Region::ChinaExpat => format!(
            "Room {}{:02}, {num} {}, {}, Shanghai",
            rng.between(2, 40),
            rng.between(1, 12),
            rng.pick(&[
                "Century Avenue",
                "Huaihai Middle Road",
                "West Nanjing Road",
                "Hongqiao Road"
            ]),
            rng.pick(&["Pudong", "Xuhui", "Jing'an", "Changning"])
        ),
        Region::UsEast | Region::UsWest => {
            let cities: &[(&str, &str, &str)] = if region == Region::UsEast {
                &[
                    ("New York", "NY", "100"),
                    ("Boston", "MA", "021"),
                    ("Philadelphia", "PA", "191"),
                    ("Atlanta", "GA", "303"),
                ]
            } else {
                &[
                    ("San Francisco", "CA", "941"),
                    ("Seattle", "WA", "981"),
                    ("Los Angeles", "CA", "900"),
                    ("Portland", "OR", "972"),
                ]
            };
            let (city, state, zip) = rng.pick(cities);
            format!(
                "{num} {}, {city}, {state} {zip}{}, USA",
                rng.pick(&[
                    "Main Street",
                    "Oak Avenue",
                    "Park Avenue",
                    "Maple Drive",
                    "Washington Street"
                ]),
                digits(rng, 2)
            )
        }
        Region::Uk => {
            let (city, outward) = rng.pick(&[
                ("London", "SW1A"),
                ("Manchester", "M1"),
                ("Bristol", "BS1"),
                ("Edinburgh", "EH1"),
            ]);
            let letters: String = (0..2)
                .map(|_| char::from(b'A' + rng.below(26) as u8))
                .collect();
            format!(
                "{num} {}, {city} {outward} {}{letters}, UK",
                rng.pick(&[
                    "High Street",
                    "Station Road",
                    "Church Lane",
                    "Victoria Road"
                ]),
                rng.between(1, 9)
            )
        }
        Region::Germany => {
            let (city, plz) = rng.pick(&[("Berlin", "10"), ("München", "80"), ("Hamburg", "20")]);
            format!(
                "{} {}, {plz}{} {city}, Germany",
                rng.pick(&[
                    "Hauptstraße",
                    "Friedrichstraße",
                    "Schillerstraße",
                    "Bahnhofstraße"
                ]),
                num % 200 + 1,
                digits(rng, 3)
            )
        }
        Region::Singapore => format!(
            "{num} {}, #{:02}-{:02}, Singapore {}",
            rng.pick(&[
                "Orchard Road",
                "Tanjong Pagar Road",
                "Bukit Timah Road",
                "Marina Boulevard"
            ]),
            rng.between(2, 30),
            rng.between(1, 20),
            digits(rng, 6)
        ),
        Region::Australia => format!(
            "{num} {}, {} NSW {}, Australia",
            rng.pick(&[
                "George Street",
                "Pitt Street",
                "Oxford Street",
                "King Street"
            ]),
            rng.pick(&["Sydney", "Surry Hills", "Parramatta", "Bondi"]),
            rng.between(2000, 2234)
        ),
    }
}

/// An email address for a person, or empty when they gave none.
fn email(rng: &mut Rng, region: Region, first: &str, last: &str, birth_year: i32) -> String {
    if rng.chance(if region == Region::China { 0.08 } else { 0.03 }) {
        return String::new();
    }
    let (first, last) = (ascii_local(first), ascii_local(last));
    if region == Region::China {
        if rng.chance(0.3) {
            let (lead, len) = (rng.between(1, 9), rng.between(5, 9) as usize);
            return format!("{lead}{}@qq.com", digits(rng, len));
        }
        let domain = rng.pick(&[
            "163.com",
            "126.com",
            "foxmail.com",
            "sina.com",
            "outlook.com",
            "gmail.com",
        ]);
        return match rng.below(3) {
            0 => format!("{last}{first}@{domain}"),
            1 => format!("{last}{first}{}@{domain}", birth_year % 100),
            _ => format!("{first}.{last}{}@{domain}", rng.between(1, 99)),
        };
    }
    let domain = match (region, rng.chance(0.3)) {
        (Region::Uk, true) => "btinternet.com",
        (Region::Germany, true) => "web.de",
        (Region::Australia, true) => "bigpond.com",
        (Region::Singapore, true) => "singnet.com.sg",
        _ => *rng.pick(&[
            "gmail.com",
            "outlook.com",
            "yahoo.com",
            "icloud.com",
            "hotmail.com",
        ]),
    };
    let initial = first.chars().next().map(String::from).unwrap_or_default();
    match rng.below(3) {
        0 => format!("{first}.{last}@{domain}"),
        1 => format!("{initial}{last}{}@{domain}", rng.between(1, 99)),
        _ => format!("{first}{}@{domain}", birth_year % 100),
    }
}

/// A customer of a random region with a name, gender and contact details to match.
pub fn person(rng: &mut Rng) -> Person {
    let region = Region::draw(rng);
    let female = rng.chance(0.52);
    // Most customers state their gender; a few do not, or choose "other".
    let gender = match rng.below(100) {
        0..=3 => 0,
        4 => 3,
        _ if female => 2,
        _ => 1,
    };
    let birth_date = (!rng.chance(0.1)).then(|| {
        let first = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default();
        first + Duration::days(rng.below(57 * 365) as i64)
    });
    let birth_year = birth_date.map_or(1985, |d| chrono::Datelike::year(&d));
    let (name, first, last, salutation) = if region.lang() == Lang::Zh {
        let weights: Vec<f64> = SURNAMES.iter().map(|s| s.2).collect();
        let (surname, surname_py, _) = SURNAMES[rng.weighted(&weights)];
        let (given, given_py) = *rng.pick(if female { GIVEN_FEMALE } else { GIVEN_MALE });
        let title = match gender {
            1 => "先生",
            2 => "女士",
            _ => "",
        };
        let salutation = if title.is_empty() {
            format!("{surname}{given}")
        } else {
            format!("{surname}{title}")
        };
        (
            format!("{surname}{given}"),
            given_py,
            surname_py,
            salutation,
        )
    } else {
        let first = *rng.pick(if female { FIRST_FEMALE } else { FIRST_MALE });
        let last = *rng.pick(LAST_NAMES);
        let salutation = match gender {
            1 => format!("Mr {last}"),
            2 => format!("Ms {last}"),
            _ => first.to_owned(),
        };
        (format!("{first} {last}"), first, last, salutation)
    };
    let address = address(rng, region);
    let phone = phone(rng, region);
    let email = email(rng, region, first, last, birth_year);
    Person {
        region,
        salutation,
        customer: CustomerInsertForm {
            name,
            gender,
            birth_date,
            address,
            phone,
            email,
            tags: Vec::new(),
            request_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_stored_normalized() {
        let mut rng = Rng::new(5);
        for _ in 0..2_000 {
            let person = person(&mut rng);
            let p = &person.customer;
            assert!(
                !p.name.is_empty() && p.name.chars().count() <= 200,
                "{person:?}"
            );
            let digits = p.phone.strip_prefix('+').unwrap_or("");
            assert!(
                (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()),
                "E.164: {person:?}"
            );
            if !p.email.is_empty() {
                let (local, domain) = p.email.split_once('@').unwrap_or(("", ""));
                assert!(!local.is_empty() && domain.contains('.'), "{person:?}");
                assert_eq!(p.email, p.email.to_lowercase());
                assert!(p.email.is_ascii(), "{person:?}");
            }
            assert!(!p.address.is_empty() && p.address.chars().count() <= 500);
            assert!(p
                .birth_date
                .is_none_or(|d| chrono::Datelike::year(&d) >= 1950));
        }
    }
}
