//! The demo dataset's words: products, communication topics (Chinese and English
//! templates with placeholders), ticket issues and solutions, and the one template
//! filler.

/// The language a text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese.
    Zh,
    /// English.
    En,
}

/// Text in both languages.
#[derive(Debug, Clone, Copy)]
pub struct Both {
    /// Chinese.
    pub zh: &'static str,
    /// English.
    pub en: &'static str,
}

impl Both {
    /// The text in `lang`.
    pub fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::Zh => self.zh,
            Lang::En => self.en,
        }
    }
}

/// Templates in both languages; one is picked at random.
#[derive(Debug, Clone, Copy)]
pub struct Variants {
    /// Chinese templates.
    pub zh: &'static [&'static str],
    /// English templates.
    pub en: &'static [&'static str],
}

impl Variants {
    /// The templates of `lang`.
    pub fn get(&self, lang: Lang) -> &'static [&'static str] {
        match lang {
            Lang::Zh => self.zh,
            Lang::En => self.en,
        }
    }

    /// One of the templates of `lang`, at random.
    pub fn pick(&self, lang: Lang, rng: &mut super::rng::Rng) -> &'static str {
        let items = self.get(lang);
        items[rng.below(items.len() as u64) as usize]
    }
}

/// A product of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    /// Its name.
    pub name: Both,
    /// List price in CNY fen (hundredths of a yuan).
    pub price_fen: i64,
    /// Whether wholesale customers buy it by the dozen.
    pub wholesale: bool,
}

const fn product(zh: &'static str, en: &'static str, price_fen: i64, wholesale: bool) -> Product {
    Product {
        name: Both { zh, en },
        price_fen,
        wholesale,
    }
}

/// The shop's catalog.
pub const PRODUCTS: &[Product] = &[
    product("降噪耳机", "noise-cancelling headphones", 129_900, true),
    product("智能手表", "smart watch", 199_900, true),
    product("蓝牙音箱", "Bluetooth speaker", 39_900, true),
    product("扫地机器人", "robot vacuum", 249_900, false),
    product("空气净化器", "air purifier", 169_900, true),
    product("电动牙刷", "electric toothbrush", 29_900, true),
    product("咖啡机", "coffee machine", 329_900, false),
    product("机械键盘", "mechanical keyboard", 69_900, true),
    product("27英寸显示器", "27-inch monitor", 189_900, true),
    product("移动电源", "power bank", 14_900, true),
    product("保温杯", "thermos bottle", 12_900, true),
    product("跑步鞋", "running shoes", 59_900, false),
    product("羽绒服", "down jacket", 89_900, false),
    product("真丝围巾", "silk scarf", 45_900, false),
    product("茶叶礼盒", "tea gift box", 38_800, true),
    product("电饭煲", "rice cooker", 49_900, true),
    product("加湿器", "humidifier", 25_900, true),
    product("人体工学椅", "ergonomic office chair", 129_900, true),
    product("年度会员", "annual membership", 26_800, false),
];

/// The products before this index are goods (what orders and questions are about);
/// the rest are services.
pub const GOODS: usize = 18;
/// Index of the annual membership in [`PRODUCTS`] (what renewals are about).
pub const MEMBERSHIP: usize = 18;

/// What a communication is about: templates of its body, of an email subject, and
/// the outcomes it may end with.
#[derive(Debug, Clone, Copy)]
pub struct Topic {
    /// Short name (tests and debugging).
    pub key: &'static str,
    /// Relative frequency.
    pub weight: f64,
    /// Whether it speaks of an earlier order (`{order}`); without one the customer
    /// has nothing to speak of.
    pub needs_order: bool,
    /// Body templates.
    pub body: Variants,
    /// Email subject templates.
    pub subject: Variants,
    /// Possible outcomes; an empty string is "no outcome recorded".
    pub outcome: Variants,
}

/// The topics of communications. Placeholders: `{order}`, `{product}`, `{amount}`,
/// `{tracking}`, `{invoice}`, `{company}`, `{days}`, `{qty}`, `{date}`, `{address}`,
/// `{agent}`, `{name}`.
pub const TOPICS: &[Topic] = &[
    Topic {
        key: "order_status",
        weight: 16.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "询问订单 {order} 的发货时间，{product}什么时候能到？",
                "订单 {order} 显示已发货，但物流三天没有更新，麻烦查一下快递单号 {tracking}。",
                "想确认订单 {order}（{product}，{amount}）是否已经出库。",
                "快递 {tracking} 显示派送失败，需要重新约定送货时间。",
            ],
            en: &[
                "Asked when order {order} ({product}) will ship.",
                "Tracking {tracking} for order {order} has not updated for three days; asked us to chase the courier.",
                "Wants confirmation that order {order} for {amount} has left the warehouse.",
                "Delivery of {tracking} failed; a new delivery slot is needed.",
            ],
        },
        subject: Variants {
            zh: &["订单 {order} 物流查询", "订单 {order} 什么时候发货？"],
            en: &["Where is order {order}?", "Shipping status of order {order}"],
        },
        outcome: Variants {
            zh: &["已告知物流信息", "已催促仓库发货", "已重新预约派送", ""],
            en: &["shared tracking details", "escalated to the warehouse", "delivery rebooked", ""],
        },
    },
    Topic {
        key: "refund",
        weight: 9.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "申请订单 {order} 退款：{product}与描述不符，金额 {amount}。",
                "退款到账了吗？订单 {order} 已经退货 {days} 天了。",
                "{product}有划痕，客户要求部分退款。",
                "客户取消订单 {order}，需原路退款 {amount}。",
            ],
            en: &[
                "Requested a refund for order {order}: the {product} does not match the description ({amount}).",
                "Refund for order {order} still not received {days} days after the return.",
                "The {product} arrived scratched; the customer asks for a partial refund.",
                "Order {order} cancelled; {amount} to be refunded to the original payment method.",
            ],
        },
        subject: Variants {
            zh: &["订单 {order} 退款申请", "关于退款进度"],
            en: &["Refund request for order {order}", "Refund status"],
        },
        outcome: Variants {
            zh: &["已退款", "退款审批中", "拒绝退款：超过退货期限", "同意部分退款"],
            en: &["refund approved", "refund pending approval", "refund declined: outside the return window", "partial refund agreed"],
        },
    },
    Topic {
        key: "invoice",
        weight: 8.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "请开具订单 {order} 的增值税专用发票，抬头：{company}。",
                "发票 {invoice} 的金额 {amount} 有误，需要重开。",
                "电子发票没有收到，订单 {order}，请发到邮箱。",
                "财务要求发票备注里写上订单号 {order}。",
            ],
            en: &[
                "Needs a VAT invoice for order {order}, made out to {company}.",
                "Invoice {invoice} shows the wrong amount ({amount}); please reissue it.",
                "Did not receive the electronic invoice for order {order}; asked for it by email.",
                "Their accounts team wants the order number {order} printed on the invoice.",
            ],
        },
        subject: Variants {
            zh: &["订单 {order} 开票", "发票 {invoice} 重开申请"],
            en: &["Invoice for order {order}", "Reissue invoice {invoice}"],
        },
        outcome: Variants {
            zh: &["发票已重开", "电子发票已发送", "已转财务处理"],
            en: &["invoice reissued", "e-invoice sent", "passed to accounts"],
        },
    },
    Topic {
        key: "return_exchange",
        weight: 6.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "{product}尺寸不合适，想换货。",
                "七天无理由退货：订单 {order} 的{product}还没拆封。",
                "退货已寄回，快递单号 {tracking}，请查收。",
            ],
            en: &[
                "The {product} is the wrong size; wants an exchange.",
                "Return within 7 days: the {product} from order {order} is unopened.",
                "Return shipped back with tracking {tracking}.",
            ],
        },
        subject: Variants {
            zh: &["订单 {order} 退换货", "换货申请"],
            en: &["Return of order {order}", "Exchange request"],
        },
        outcome: Variants {
            zh: &["已同意换货", "已生成退货单", "等待仓库签收"],
            en: &["exchange approved", "return label sent", "waiting for the warehouse"],
        },
    },
    Topic {
        key: "product_question",
        weight: 12.0,
        needs_order: false,
        body: Variants {
            zh: &[
                "咨询{product}的保修期和售后网点。",
                "{product}有没有其他颜色？价格是多少？",
                "想了解{product}和上一代有什么区别。",
                "问{product}能不能开企业发票，{qty} 台以上有没有优惠。",
            ],
            en: &[
                "Asked about the warranty period of the {product}.",
                "Is the {product} available in other colours, and at what price?",
                "Wants to know how the {product} differs from the previous model.",
                "Asked whether buying {qty} units of the {product} comes with a discount.",
            ],
        },
        subject: Variants {
            zh: &["{product}咨询", "关于{product}的问题"],
            en: &["Question about the {product}", "{product}: availability"],
        },
        outcome: Variants {
            zh: &["已解答", "已发送产品资料", "客户考虑中", ""],
            en: &["answered", "sent the product sheet", "customer is thinking it over", ""],
        },
    },
    Topic {
        key: "complaint",
        weight: 5.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "投诉：快递员没有送货上门，{product}被放在门卫。",
                "客户对客服响应速度不满意，要求主管回电。",
                "投诉收到的{product}像是二手的，包装已被拆开。",
            ],
            en: &[
                "Complaint: the courier left the {product} at the gate without calling.",
                "Unhappy with our response time; asked for a supervisor to call back.",
                "Complaint: the {product} looked used and the packaging had been opened.",
            ],
        },
        subject: Variants {
            zh: &["投诉：订单 {order}", "对服务的投诉"],
            en: &["Complaint about order {order}", "Complaint"],
        },
        outcome: Variants {
            zh: &["已致歉并补发优惠券", "已升级至主管", "已安排换新"],
            en: &["apologised and sent a voucher", "escalated to a supervisor", "replacement arranged"],
        },
    },
    Topic {
        key: "warranty_repair",
        weight: 5.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "{product}无法开机，还在保修期内，申请维修。",
                "寄修的{product}已收到，检测后更换主板。",
                "{product}充不进电，远程指导后仍未解决。",
            ],
            en: &[
                "The {product} will not turn on; still under warranty, asks for a repair.",
                "The {product} sent in for repair arrived; the main board will be replaced.",
                "The {product} does not charge; remote troubleshooting did not help.",
            ],
        },
        subject: Variants {
            zh: &["{product}保修维修", "维修进度"],
            en: &["Warranty repair: {product}", "Repair status"],
        },
        outcome: Variants {
            zh: &["已安排上门取件", "维修完成已寄回", "待客户寄回"],
            en: &["pickup scheduled", "repaired and shipped back", "waiting for the customer to send it"],
        },
    },
    Topic {
        key: "payment",
        weight: 5.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "付款失败，信用卡被拒，订单 {order} 金额 {amount}。",
                "对公转账 {amount} 已汇出，请确认到账。",
                "客户问订单 {order} 能不能分期付款。",
            ],
            en: &[
                "Payment for order {order} ({amount}) failed: card declined.",
                "Bank transfer of {amount} sent; asked us to confirm receipt.",
                "Asked whether order {order} can be paid in instalments.",
            ],
        },
        subject: Variants {
            zh: &["订单 {order} 付款问题", "转账确认"],
            en: &["Payment for order {order}", "Transfer confirmation"],
        },
        outcome: Variants {
            zh: &["已确认到账", "已发送新的付款链接", "待财务核实"],
            en: &["payment confirmed", "new payment link sent", "waiting for accounts"],
        },
    },
    Topic {
        key: "quote",
        weight: 4.0,
        needs_order: false,
        body: Variants {
            zh: &[
                "询价：{product}批量采购 {qty} 台，希望给出阶梯报价。",
                "报价单已发送：{product}批发价 {amount}，有效期 {days} 天。",
            ],
            en: &[
                "Quote request: {qty} units of the {product}; asks for volume pricing.",
                "Sent the quote: {product} at {amount} wholesale, valid for {days} days.",
            ],
        },
        subject: Variants {
            zh: &["{product}批量报价", "报价单"],
            en: &["Quote: {product} x {qty}", "Your quote"],
        },
        outcome: Variants {
            zh: &["已报价", "客户接受报价", "客户嫌价格高"],
            en: &["quote sent", "quote accepted", "customer finds it too expensive"],
        },
    },
    Topic {
        key: "promotion",
        weight: 6.0,
        needs_order: false,
        body: Variants {
            zh: &[
                "告知双十一活动：{product}限时优惠，老客户再享九折。",
                "客户询问优惠券为什么不能叠加使用。",
                "推荐新品{product}，会员价 {amount}。",
            ],
            en: &[
                "Told the customer about the holiday sale: {product} 10% off for returning customers.",
                "Asked why two discount codes cannot be combined.",
                "Recommended the new {product} at the member price of {amount}.",
            ],
        },
        subject: Variants {
            zh: &["会员专享优惠", "新品推荐：{product}"],
            en: &["Member discount", "New: {product}"],
        },
        outcome: Variants {
            zh: &["客户有兴趣", "客户暂不需要", ""],
            en: &["interested", "not interested for now", ""],
        },
    },
    Topic {
        key: "account",
        weight: 4.0,
        needs_order: false,
        body: Variants {
            zh: &["更新收货地址为 {address}。", "修改绑定手机号，旧号码已停用。", "客户要求退订营销短信。"],
            en: &[
                "Updated the delivery address to {address}.",
                "Changed the phone number on the account; the old one is no longer in use.",
                "Asked to unsubscribe from marketing messages.",
            ],
        },
        subject: Variants {
            zh: &["账户信息变更", "收货地址更新"],
            en: &["Account details changed", "New delivery address"],
        },
        outcome: Variants {
            zh: &["已更新", ""],
            en: &["updated", ""],
        },
    },
    Topic {
        key: "feedback",
        weight: 6.0,
        needs_order: true,
        body: Variants {
            zh: &[
                "对{product}很满意，愿意写好评。",
                "回访：{product}用了 {days} 天，整体满意，建议说明书再详细一些。",
                "客户反馈{product}噪音偏大，但可以接受。",
            ],
            en: &[
                "Very happy with the {product}; will leave a review.",
                "Follow-up: {days} days with the {product}, satisfied overall; suggests a clearer manual.",
                "Says the {product} is a bit noisy but acceptable.",
            ],
        },
        subject: Variants {
            zh: &["{product}使用回访", "感谢您的反馈"],
            en: &["How is your {product}?", "Thanks for your feedback"],
        },
        outcome: Variants {
            zh: &["满意", "已记录建议", ""],
            en: &["satisfied", "suggestion logged", ""],
        },
    },
    Topic {
        key: "renewal",
        weight: 3.0,
        needs_order: false,
        body: Variants {
            zh: &["会员即将到期，提醒续费，年费 {amount}。", "客户同意续签年度服务合同。"],
            en: &[
                "Membership expires soon; reminded about the renewal ({amount} a year).",
                "Customer agreed to renew the annual service contract.",
            ],
        },
        subject: Variants {
            zh: &["会员续费提醒", "年度合同续签"],
            en: &["Your membership renewal", "Annual contract renewal"],
        },
        outcome: Variants {
            zh: &["已续费", "客户考虑中", "不再续费"],
            en: &["renewed", "thinking it over", "will not renew"],
        },
    },
    Topic {
        key: "installation",
        weight: 3.0,
        needs_order: true,
        body: Variants {
            zh: &["预约 {date} 上门安装{product}。", "安装师傅已完成{product}的安装调试。"],
            en: &["Booked the installation of the {product} for {date}.", "Our technician installed and tested the {product}."],
        },
        subject: Variants {
            zh: &["{product}安装预约", "安装完成确认"],
            en: &["Installation of your {product}", "Installation done"],
        },
        outcome: Variants {
            zh: &["已预约", "安装完成", ""],
            en: &["booked", "installed", ""],
        },
    },
];

/// How a communication of each channel and direction is framed around its body:
/// `{body}` is the topic's text.
pub mod frames {
    use super::Variants;

    /// Phone call from the customer.
    pub const PHONE_IN: Variants = Variants {
        zh: &["客户来电：{body}", "来电咨询：{body}"],
        en: &["Customer called: {body}", "Inbound call. {body}"],
    };
    /// Phone call to the customer.
    pub const PHONE_OUT: Variants = Variants {
        zh: &["致电客户：{body}", "回访电话：{body}"],
        en: &["Called the customer: {body}", "Follow-up call. {body}"],
    };
    /// An outbound call nobody answered (no body).
    pub const NO_ANSWER: Variants = Variants {
        zh: &["致电客户未接通，稍后再拨。", "电话无人接听，已发短信。"],
        en: &[
            "Called, no answer; will try again later.",
            "No answer; left a voicemail.",
        ],
    };
    /// Email from the customer.
    pub const EMAIL_IN: Variants = Variants {
        zh: &["您好，{body}谢谢！", "{body}请尽快回复。"],
        en: &[
            "Hello, {body} Thanks, {name}",
            "Hi team, {body} Regards, {name}",
        ],
    };
    /// Email to the customer.
    pub const EMAIL_OUT: Variants = Variants {
        zh: &[
            "{name}您好，{body}如有问题请随时联系。——{agent}",
            "尊敬的{name}：{body}祝好！{agent}",
        ],
        en: &[
            "Dear {name}, {body} Kind regards, {agent}",
            "Hi {name}, {body} Best, {agent}",
        ],
    };
    /// Chat message from the customer.
    pub const CHAT_IN: Variants = Variants {
        zh: &["{body}", "在吗？{body}"],
        en: &["{body}", "Hi, {body}"],
    };
    /// Chat message to the customer.
    pub const CHAT_OUT: Variants = Variants {
        zh: &["您好，{body}", "亲，{body}"],
        en: &["Hi! {body}", "Hello {name}, {body}"],
    };
    /// A meeting.
    pub const MEETING: Variants = Variants {
        zh: &[
            "面谈纪要：{body}参会：{agent}、客户本人。",
            "到店拜访：{body}",
        ],
        en: &[
            "Meeting notes: {body} Attended by {agent} and the customer.",
            "Store visit: {body}",
        ],
    };
    /// A note by staff.
    pub const NOTE: Variants = Variants {
        zh: &["内部备注：{body}", "备注：{body}"],
        en: &["Internal note: {body}", "Note: {body}"],
    };
}

/// A kind of service ticket: the issue (placeholders as in [`TOPICS`]) and the
/// solutions that fit it.
#[derive(Debug, Clone, Copy)]
pub struct TicketKind {
    /// The problem.
    pub issue: Both,
    /// How it may have been solved.
    pub solutions: Variants,
}

const fn ticket(
    issue: Both,
    zh: &'static [&'static str],
    en: &'static [&'static str],
) -> TicketKind {
    TicketKind {
        issue,
        solutions: Variants { zh, en },
    }
}

/// The kinds of service tickets.
pub const TICKET_KINDS: &[TicketKind] = &[
    ticket(
        Both {
            zh: "{product}无法开机，已尝试充电。",
            en: "The {product} does not turn on, even after charging.",
        },
        &[
            "已安排换新，新机已寄出。",
            "寄修检测为主板故障，已免费维修。",
        ],
        &[
            "Replacement unit shipped.",
            "Main board replaced free of charge under warranty.",
        ],
    ),
    ticket(
        Both {
            zh: "订单 {order} 的{product}少发了配件。",
            en: "Order {order}: the {product} arrived without its accessories.",
        },
        &["补发配件，快递单号已告知客户。"],
        &["Missing accessories sent; tracking number shared with the customer."],
    ),
    ticket(
        Both {
            zh: "{product}使用一周后屏幕出现坏点。",
            en: "Dead pixels on the {product} screen after one week.",
        },
        &["已安排换新，新机已寄出。", "已退货退款。"],
        &["Replacement unit shipped.", "Returned and refunded."],
    ),
    ticket(
        Both {
            zh: "申请退款：订单 {order}，金额 {amount}，退款一直未到账。",
            en: "Refund request: order {order}, {amount}, refund not received yet.",
        },
        &[
            "已原路退款，3 个工作日内到账。",
            "银行处理延迟，已提供退款凭证。",
        ],
        &[
            "Refunded to the original payment method; allow 3 working days.",
            "The bank was slow; sent the customer the refund receipt.",
        ],
    ),
    ticket(
        Both {
            zh: "订单 {order} 的发票抬头开错，需要重开发票。",
            en: "Wrong company name on the invoice for order {order}; needs a new invoice.",
        },
        &["发票已作废并重新开具。"],
        &["Invoice voided and reissued."],
    ),
    ticket(
        Both {
            zh: "快递 {tracking} 显示已签收，但客户没有收到货。",
            en: "Tracking {tracking} says delivered but the customer has nothing.",
        },
        &["联系快递公司找回包裹并重新派送。", "包裹丢失，已补发。"],
        &[
            "Courier found the parcel and redelivered it.",
            "Parcel lost; sent a new one.",
        ],
    ),
    ticket(
        Both {
            zh: "{product}连接不上手机蓝牙。",
            en: "The {product} will not pair with the customer's phone over Bluetooth.",
        },
        &["远程指导重置后恢复正常。", "升级固件后恢复正常。"],
        &[
            "Fixed after a guided factory reset.",
            "Fixed by a firmware update.",
        ],
    ),
];

/// Names our staff sign with.
pub const AGENTS: Variants = Variants {
    zh: &["小李", "小王", "陈经理", "刘敏", "张晓雨", "客服小美"],
    en: &["Amy", "Kevin", "Grace", "Leo", "Hannah", "Oliver"],
};

/// Companies that ask for invoices.
pub const COMPANIES: Variants = Variants {
    zh: &[
        "上海蓝海贸易有限公司",
        "深圳市华创科技有限公司",
        "北京天和文化传媒有限公司",
        "杭州云帆电子商务有限公司",
        "成都锦城餐饮管理有限公司",
    ],
    en: &[
        "Northwind Traders Ltd",
        "Blue Harbour Logistics",
        "Maple & Finch Design",
        "Harbourview Dental Clinic",
        "Greenleaf Cafe Group",
    ],
};

/// `template` with every `{key}` replaced by `value(key)`; a key without a value, or
/// a brace without a key, is kept as written.
pub fn fill<'a>(
    template: &str,
    value: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>,
) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)) {
            Some((key, close)) if !key.is_empty() && !key.contains('{') => {
                match value(key) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn fill_replaces_known_keys_and_keeps_the_rest() {
        let value = |k: &str| match k {
            "order" => Some(Cow::Borrowed("SO-1")),
            "amount" => Some(Cow::Owned(format!("¥{}", 5))),
            _ => None,
        };
        assert_eq!(fill("订单 {order}，{amount}。", value), "订单 SO-1，¥5。");
        assert_eq!(fill("{unknown} {order}", value), "{unknown} SO-1");
        assert_eq!(fill("{ {order} {} }", value), "{ SO-1 {} }");
        assert_eq!(fill("tail {order", value), "tail {order");
    }

    #[test]
    fn membership_is_the_annual_membership() {
        assert_eq!(PRODUCTS[MEMBERSHIP].name.en, "annual membership");
        assert_eq!(PRODUCTS.len(), GOODS + 1);
    }

    #[test]
    fn every_topic_has_text_in_both_languages() {
        for topic in TOPICS {
            for lang in [Lang::Zh, Lang::En] {
                assert!(!topic.body.get(lang).is_empty(), "{}", topic.key);
                assert!(!topic.subject.get(lang).is_empty(), "{}", topic.key);
                assert!(!topic.outcome.get(lang).is_empty(), "{}", topic.key);
            }
            // A topic that names an order needs one to exist.
            let names_order = topic
                .body
                .zh
                .iter()
                .chain(topic.body.en)
                .chain(topic.subject.zh)
                .chain(topic.subject.en)
                .any(|t| t.contains("{order}"));
            assert!(!names_order || topic.needs_order, "{}", topic.key);
        }
    }
}
