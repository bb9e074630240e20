/* generated */
/* e2enc-plan: e667ad3c9def87ecc7065da1c500a668fa6e37f5628771c6cf0a479bb5778739 */
